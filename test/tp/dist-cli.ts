/** The CLI in a process of its own, from the TypeScript sources (test/tp/distributed.test.ts). */
import { main } from '../../compiler/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
