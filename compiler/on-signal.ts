/** Signals that end a CLI run: Ctrl-C, kill, a closed terminal. */
const TERMINATING = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

let enabled = false;

/**
 * Lets onTerminatingSignal install its listeners: the CLI calls this, a program that imports the
 * package does not. A listener on SIGINT changes what the signal does to the whole process, which
 * is the application's to decide (it may have its own, and would see the signal twice).
 */
export function handleTerminatingSignals(): void {
  enabled = true;
}

/** Whether onTerminatingSignal acts (in the CLI). */
export function terminatingSignalsHandled(): boolean {
  return enabled;
}

/**
 * Until the returned function is called (and only in the CLI, see handleTerminatingSignals): on
 * SIGINT, SIGTERM or SIGHUP, runs `cleanup` (synchronous: nothing asynchronous runs once a signal
 * ends the process) and then ends the process by the same signal, as it would have ended without a
 * listener.
 */
export function onTerminatingSignal(cleanup: () => void): () => void {
  if (!enabled) return () => {};
  const handler = (signal: NodeJS.Signals) => {
    release();
    try {
      cleanup();
    } finally {
      process.kill(process.pid, signal);  // no listener of ours left: the default action (or the next listener) ends the process
    }
  };
  const release = () => {
    for (const signal of TERMINATING) process.removeListener(signal, handler);
  };
  for (const signal of TERMINATING) process.on(signal, handler);
  return release;
}
