/** Bytes to binary units with one decimal, as the sidebar and the status bar show them. */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** The largest unit in which `bytes` is at least 1, and its size in bytes. */
function unitOf(bytes: number): [string, number] {
  let exponent = 0;
  while (exponent < UNITS.length - 1 && Math.abs(bytes) >= 1024 ** (exponent + 1)) {
    exponent += 1;
  }
  return [UNITS[exponent], 1024 ** exponent];
}

function scaled(bytes: number, unit: string, size: number): string {
  // whole bytes have no fraction to show
  return unit === 'B' ? `${Math.round(bytes)}` : (bytes / size).toFixed(1);
}

/** `5.1 GiB`, `300.0 MiB`, `512 B`. */
export function formatBytes(bytes: number): string {
  const [unit, size] = unitOf(bytes);
  return `${scaled(bytes, unit, size)} ${unit}`;
}

/** `5.1 / 8.0 GiB`: the part in the unit of the whole, so the two read side by side. */
export function formatPart(part: number, whole: number): string {
  const [unit, size] = unitOf(whole);
  return `${scaled(part, unit, size)} / ${scaled(whole, unit, size)} ${unit}`;
}
