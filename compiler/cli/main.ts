import { MistralCompileError } from '../errors.js';
import { buildCommand } from './commands/build.js';
import { generateCommand } from './commands/generate.js';
import { logitsCommand } from './commands/logits.js';
import { planCommand } from './commands/plan.js';
import { randomWeightsCommand } from './commands/random-weights.js';
import { handleTerminatingSignals } from '../on-signal.js';
import { stopTickers } from './progress.js';

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; summary: string }> = {
  plan: { run: planCommand, summary: 'validate a params.json and print its fusion and sharding plan' },
  build: { run: buildCommand, summary: 'render and compile the model\'s kernels into a shared library' },
  'random-weights': { run: randomWeightsCommand, summary: 'write seeded random weights in the official checkpoint layout' },
  logits: { run: logitsCommand, summary: 'write the logits of every position of a token sequence' },
  generate: { run: generateCommand, summary: 'generate tokens and report prefill/decode speed' },
};

const HELP = `usage: mistral-compile <command> [options]

commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(16)}${c.summary}`).join('\n')}

Run mistral-compile <command> --help for its options.`;

/**
 * Exit status when the reader of stdout has gone (`| head`): 128 + SIGPIPE, what a shell reports for
 * `yes | head` and what `set -o pipefail` expects of a cut pipeline.
 */
export const EXIT_BROKEN_PIPE = 141;

let pipeHandlersInstalled = false;

/**
 * Ends the process quietly when stdout's or stderr's reader closes the pipe. Node ignores SIGPIPE,
 * so a write to a closed pipe becomes an 'error' event on the stream, and with no listener Node
 * prints it with a stack; generate would also go on computing tokens nobody reads. process.exit
 * runs the build's exit listener (compiler/build/build.ts), which kills a compiler still running
 * and its process group, so no child is left behind.
 */
function exitQuietlyOnBrokenPipe(): void {
  if (pipeHandlersInstalled) return;  // main() may run many times in one process (the tests)
  pipeHandlersInstalled = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(EXIT_BROKEN_PIPE);
      // Any other failure to write (a full disk behind a redirect): one line where it can still go.
      if (stream === process.stdout) process.stderr.write(`mistral-compile: error: cannot write to stdout (${err.code ?? err.message}); check where stdout goes\n`);
      process.exit(1);
    });
  }
}

/** Runs the CLI; returns the exit code. Errors print one line; --verbose adds the stack. */
export async function main(argv: string[]): Promise<number> {
  exitQuietlyOnBrokenPipe();
  handleTerminatingSignals();  // the CLI owns the process: it cleans up (compilers, temporaries) before a signal ends it
  const verbose = argv.includes('--verbose');
  const [name, ...rest] = argv;
  if (name === undefined) {
    // No command is a mistake: the usage goes where errors go, not into a pipe that expects results.
    console.error(HELP);
    return 1;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    console.log(HELP);
    return 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    console.error(`mistral-compile: unknown command ${JSON.stringify(name)}; use one of ${Object.keys(COMMANDS).join(', ')}`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    stopTickers();  // the error is the last line
    if (err instanceof MistralCompileError) {
      console.error(`mistral-compile: error: ${err.message}`);
      if (verbose) console.error(err.details ?? '', err.stack);
      return 1;
    }
    console.error(`mistral-compile: internal error: ${err instanceof Error ? err.message : String(err)} (please report it${verbose ? ' with the stack below' : '; --verbose shows the stack'})`);
    if (verbose && err instanceof Error) console.error(err.stack);
    return 70;
  }
}
