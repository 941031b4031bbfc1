// Runs one scenario of a checkpoint changed under the runtime addon's mapping, in a process of its
// own: if the addon lets SIGBUS through, this process dies and the parent test sees the signal
// instead of losing the whole vitest worker. Prints one JSON line: what each step returned or threw.
//   node mapped-file-child.mjs <addon.node> <library.so> <checkpoint> <weights JSON> <scenario>
import { closeSync, ftruncateSync, openSync, renameSync, statSync, truncateSync, utimesSync, writeFileSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const [addonPath, libraryPath, checkpoint, weightsJson, scenario] = process.argv.slice(2);
const addon = createRequire(import.meta.url)(addonPath);
const weights = JSON.parse(weightsJson);
const steps = [];

/** Records what `run` returned (a summary) or the message it threw or rejected with. */
async function step(name, run) {
  try {
    const value = await run();
    steps.push({ name, ok: true, value: value instanceof Float32Array ? Array.from(value) : value });
  } catch (err) {
    steps.push({ name, ok: false, error: String(err?.message ?? err) });
  }
}

const original = readFileSync(checkpoint);
const library = new addon.CompiledLibrary(libraryPath);
const file = new addon.MappedFile(checkpoint);
const model = new addon.ModelInstance(library, file, weights, 0);
await step('before', () => model.forwardSync(new Int32Array([3]), 0, false));

switch (scenario) {
  case 'truncate-between-calls':
    // Cut inside the weights: the next forward would read past the new end of the file.
    truncateSync(checkpoint, 100);
    await step('forwardSync', () => model.forwardSync(new Int32Array([3]), 0, false));
    await step('forward', () => model.forward(new Int32Array([3]), 0, false));
    await step('readHeader', () => file.readHeader(1 << 20).length);
    break;
  case 'truncate-during-forward': {
    // The slow library sleeps 100 ms before it reads the weights: cut the file meanwhile.
    const pending = model.forward(new Int32Array([3]), 0, false);
    await new Promise((r) => setTimeout(r, 30));
    truncateSync(checkpoint, 0);
    await step('forward', () => pending);
    await step('after', () => model.forwardSync(new Int32Array([3]), 0, false));
    break;
  }
  case 'rewrite-in-place': {
    // Same size, other bytes, written through the same inode (as `cp new old` does).
    const fd = openSync(checkpoint, 'r+');
    ftruncateSync(fd, 0);
    const changed = Buffer.from(original);
    changed.fill(0x40, changed.length - 64);
    writeFileSync(fd, changed);
    closeSync(fd);
    const later = new Date(Date.now() + 5000);
    utimesSync(checkpoint, later, later);
    await step('forwardSync', () => model.forwardSync(new Int32Array([3]), 0, false));
    break;
  }
  case 'replace-by-rename': {
    // A new file renamed over the path: the mapping keeps the old inode, so nothing changes for the model.
    const next = `${checkpoint}.next`;
    writeFileSync(next, Buffer.alloc(original.length, 0x40));
    renameSync(next, checkpoint);
    truncateSync(checkpoint, 10);
    await step('forwardSync', () => model.forwardSync(new Int32Array([3]), 0, false));
    await step('readHeader', () => file.readHeader(8).length);
    break;
  }
  case 'sigbus-elsewhere': {
    // A SIGBUS that is not ours still ends the process as before: the guard only answers its own.
    await step('kill', () => process.kill(process.pid, 'SIGBUS'));
    await new Promise((r) => setTimeout(r, 1000));
    break;
  }
  default:
    throw new Error(`unknown scenario ${scenario}`);
}
model.close();
file.close();
steps.push({ name: 'size', ok: true, value: statSync(checkpoint).size });
process.stdout.write(`${JSON.stringify(steps)}\n`);
