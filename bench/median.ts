/** The middle value of a sample (the upper one of an even count): what every benchmark here reports. */
export function median(xs: readonly number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}
