/** Figures the views derive from a snapshot: who holds how much of each GPU. */

import { IDevice, IKernel, IKernelDevice, ISnapshot } from './api';

/** A GPU's memory split four ways, in bytes. */
export interface IGaugeParts {
  /** The current notebook's kernel. */
  current: number;
  /** The server's other kernels. */
  kernels: number;
  /** Everything else on the GPU: other servers, other users, the driver's own. */
  others: number;
  free: number;
}

export function gaugeParts(
  device: IDevice,
  kernels: IKernel[],
  currentId: string | null
): IGaugeParts {
  let current = 0;
  let all = 0;
  for (const kernel of kernels) {
    for (const held of kernel.devices) {
      if (held.uuid === device.uuid) {
        all += held.bytes;
        if (kernel.id === currentId) {
          current += held.bytes;
        }
      }
    }
  }
  // clamped: NVML reads the per-process figures and the device's total at different moments
  const others = Math.max(0, (device.used ?? 0) - all);
  return { current, kernels: all - current, others, free: device.free ?? 0 };
}

/** The notebook's name, or `kernel 1a2b3c4d` for a kernel without a session. */
export function kernelLabel(kernel: IKernel): string {
  return kernel.session?.name ?? `kernel ${kernel.id.slice(0, 8)}`;
}

/** The kernel's bytes on the GPU where it holds most (the first GPU if none), with that GPU. */
export function kernelUsage(
  snapshot: ISnapshot,
  kernelId: string
): { bytes: number; device: IDevice; total: number } | null {
  const kernel = snapshot.kernels.kernels.find(k => k.id === kernelId);
  if (!kernel) {
    return null;
  }
  const largest = kernel.devices.reduce<IKernelDevice | null>(
    (best, held) => (best === null || held.bytes > best.bytes ? held : best),
    null
  );
  const devices = snapshot.devices.devices;
  const device = largest ? devices.find(d => d.uuid === largest.uuid) : devices[0];
  if (!device || device.total === null) {
    return null;
  }
  return { bytes: largest?.bytes ?? 0, device, total: device.total };
}
