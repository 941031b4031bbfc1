import { spawn } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '../..');

/**
 * Runs the CLI (main.ts through tsx, as bin/ runs dist/) in a process of its own whose stdout's
 * reader has gone, as after `| head -c 10`.
 */
export function runWithClosedStdout(argv: string[]): Promise<{ code: number | null; signal: string | null; err: string }> {
  const script = `import { main } from './compiler/cli/main.ts'; process.exitCode = await main(${JSON.stringify(argv)});`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy();  // before the child has started: its first write meets a closed pipe
  let err = '';
  child.stderr.on('data', (c) => (err += String(c)));
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, err })));
}
