/** Signals that end a CLI run: Ctrl-C, kill, a closed terminal. */
const TERMINATING = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Until the returned function is called: on SIGINT, SIGTERM or SIGHUP, runs `cleanup` (synchronous:
 * nothing asynchronous runs once a signal ends the process) and then ends the process by the same
 * signal, as it would have ended without a listener.
 */
export function onTerminatingSignal(cleanup: () => void): () => void {
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
