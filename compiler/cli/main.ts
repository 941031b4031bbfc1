import { MistralCompileError } from '../errors.js';
import { buildCommand } from './commands/build.js';
import { generateCommand } from './commands/generate.js';
import { logitsCommand } from './commands/logits.js';
import { planCommand } from './commands/plan.js';
import { randomWeightsCommand } from './commands/random-weights.js';

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

/** Runs the CLI; returns the exit code. Errors print one line; --verbose adds the stack. */
export async function main(argv: string[]): Promise<number> {
  const verbose = argv.includes('--verbose');
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(HELP);
    return name === undefined ? 1 : 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    console.error(`mistral-compile: unknown command ${JSON.stringify(name)}; use one of ${Object.keys(COMMANDS).join(', ')}`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof MistralCompileError) {
      console.error(`mistral-compile: error: ${err.message}`);
      if (verbose) console.error(err.details ?? '', err.stack);
      return 1;
    }
    console.error(`mistral-compile: internal error: ${err instanceof Error ? err.message : String(err)} (please report it; --verbose shows the stack)`);
    if (verbose && err instanceof Error) console.error(err.stack);
    return 70;
  }
}
