/**
 * The file names of a sharded checkpoint as Mistral publishes its larger models:
 * consolidated-00001-of-0000N.safetensors … consolidated-0000N-of-0000N.safetensors.
 */
export const SHARD = /^consolidated-(\d+)-of-(\d+)\.safetensors$/;

/** A shard's file name: consolidated-00001-of-00003.safetensors. */
export function isShardName(name: string): boolean {
  return SHARD.test(name);
}

/** A shard's file name as Mistral writes it: five digits each (more when N needs them). */
export function shardName(index: number, count: number): string {
  const width = Math.max(5, String(count).length);
  return `consolidated-${String(index).padStart(width, '0')}-of-${String(count).padStart(width, '0')}.safetensors`;
}
