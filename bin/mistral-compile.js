#!/usr/bin/env node
// Entry point of the CLI; the compiled TypeScript lives in dist/ (built by `npm run build`, run by npm ci's prepare).
import { main } from '../dist/compiler/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
