/** Whether process `pid` runs on this machine (as any user): signal 0 tests without sending anything. */
export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';  // runs, as another user
  }
}
