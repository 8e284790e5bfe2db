import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { IDevice, IKernel, IKernelDevice, ISnapshot } from '../src/api';
import { gaugeParts, kernelLabel, kernelUsage } from '../src/usage';

const GIB = 1024 ** 3;

/** A GPU as /vram/devices sends it: 40 GiB, `used` of it taken. */
function device(
  uuid: string,
  index: string,
  used: number | null,
  total: number | null = 40 * GIB
): IDevice {
  return {
    index,
    name: 'NVIDIA A100-SXM4-40GB',
    uuid,
    total,
    used,
    free: total === null || used === null ? null : total - used,
    utilization: null,
    processes: [],
    other_users: { count: 0, bytes: 0 },
    problems: []
  };
}

function held(
  uuid: string | null,
  bytes: number,
  source: 'nvml' | 'kernel' = 'nvml'
): IKernelDevice {
  return { uuid, index: null, bytes, source };
}

/** A kernel as /vram/kernels sends it, holding `devices`. */
function kernel(id: string, devices: IKernelDevice[], notebook: string | null = null): IKernel {
  return {
    id,
    name: 'python3',
    execution_state: 'idle',
    pid: 4242,
    session: notebook === null ? null : { path: `work/${notebook}`, name: notebook },
    devices,
    bytes: devices.reduce((sum, d) => sum + d.bytes, 0),
    vram_magic: null
  };
}

function snapshot(devices: IDevice[], kernels: IKernel[]): ISnapshot {
  return {
    devices: { devices, reason: null },
    kernels: { kernels }
  };
}

describe('gaugeParts', () => {
  const gpu0 = device('GPU-0', '0', 12 * GIB);
  const kernels = [
    kernel('current', [held('GPU-0', 3 * GIB), held('GPU-1', 1 * GIB)]),
    kernel('other', [held('GPU-0', 2 * GIB)]),
    kernel('elsewhere', [held('GPU-1', 5 * GIB)])
  ];

  it('splits a GPU into this kernel, the other kernels, the rest and free', () => {
    assert.deepEqual(gaugeParts(gpu0, kernels, 'current'), {
      current: 3 * GIB,
      kernels: 2 * GIB,
      others: 7 * GIB, // 12 used, 5 of it by this server's kernels
      free: 28 * GIB
    });
  });

  it('accounts for every used byte: the parts add up to used + free', () => {
    const parts = gaugeParts(gpu0, kernels, 'current');
    assert.equal(parts.current + parts.kernels + parts.others + parts.free, 40 * GIB);
  });

  it('counts every kernel as another one without a current kernel', () => {
    const parts = gaugeParts(gpu0, kernels, null);
    assert.equal(parts.current, 0);
    assert.equal(parts.kernels, 5 * GIB);
  });

  it('counts a current kernel that holds nothing here as nothing', () => {
    const parts = gaugeParts(device('GPU-0', '0', 12 * GIB), kernels, 'elsewhere');
    assert.equal(parts.current, 0);
    assert.equal(parts.kernels, 5 * GIB);
  });

  it('adds up what a kernel holds on one GPU from several entries', () => {
    const split = [kernel('k', [held('GPU-0', GIB), held('GPU-0', GIB, 'kernel')])];
    assert.equal(gaugeParts(gpu0, split, 'k').current, 2 * GIB);
  });

  it('never shows negative other processes when the per-process figures exceed used', () => {
    // NVML reads the per-process figures and the device's total at different moments
    const parts = gaugeParts(device('GPU-0', '0', 4 * GIB), kernels, 'current');
    assert.equal(parts.others, 0);
    assert.equal(parts.current, 3 * GIB);
    assert.equal(parts.kernels, 2 * GIB);
  });

  it('shows no other processes and no free memory when NVML could not read the memory', () => {
    const unknown = device('GPU-0', '0', null, null);
    assert.deepEqual(gaugeParts(unknown, kernels, 'current'), {
      current: 3 * GIB,
      kernels: 2 * GIB,
      others: 0,
      free: 0
    });
  });

  it('ignores memory a kernel reported on a GPU without a UUID', () => {
    const parts = gaugeParts(gpu0, [kernel('k', [held(null, 9 * GIB, 'kernel')])], 'k');
    assert.equal(parts.current, 0);
    assert.equal(parts.others, 12 * GIB);
  });

  it('is all free with no kernels on an idle GPU', () => {
    assert.deepEqual(gaugeParts(device('GPU-0', '0', 0), [], null), {
      current: 0,
      kernels: 0,
      others: 0,
      free: 40 * GIB
    });
  });
});

describe('kernelLabel', () => {
  it("is the notebook's name", () => {
    assert.equal(kernelLabel(kernel('1a2b3c4d-5e6f', [], 'train.ipynb')), 'train.ipynb');
  });

  it('is the first 8 characters of the id for a kernel without a session', () => {
    assert.equal(kernelLabel(kernel('1a2b3c4d-5e6f-7a8b', [])), 'kernel 1a2b3c4d');
  });
});

describe('kernelUsage', () => {
  const gpu0 = device('GPU-0', '0', 10 * GIB);
  const gpu1 = device('GPU-1', '1', 20 * GIB, 80 * GIB);

  it('is the GPU where the kernel holds most, with its total', () => {
    const k = kernel('k', [held('GPU-0', 1 * GIB), held('GPU-1', 3 * GIB)]);
    const usage = kernelUsage(snapshot([gpu0, gpu1], [k]), 'k');
    assert.deepEqual(usage, { bytes: 3 * GIB, device: gpu1, total: 80 * GIB });
  });

  it('keeps the first of equally large holdings', () => {
    const k = kernel('k', [held('GPU-1', GIB), held('GPU-0', GIB)]);
    assert.equal(kernelUsage(snapshot([gpu0, gpu1], [k]), 'k')?.device, gpu1);
  });

  it('is 0 bytes of the first GPU for a kernel that holds none', () => {
    const usage = kernelUsage(snapshot([gpu0, gpu1], [kernel('k', [])]), 'k');
    assert.deepEqual(usage, { bytes: 0, device: gpu0, total: 40 * GIB });
  });

  it('is null for a kernel the server does not list', () => {
    assert.equal(kernelUsage(snapshot([gpu0], [kernel('k', [])]), 'gone'), null);
  });

  it('is null without GPUs', () => {
    assert.equal(kernelUsage(snapshot([], [kernel('k', [])]), 'k'), null);
  });

  it("is null when the GPU's memory is unknown", () => {
    const unknown = device('GPU-0', '0', null, null);
    const k = kernel('k', [held('GPU-0', GIB)]);
    assert.equal(kernelUsage(snapshot([unknown], [k]), 'k'), null);
  });

  it('is null when the largest holding is on a GPU that NVML does not list', () => {
    const k = kernel('k', [held('GPU-0', GIB), held('GPU-hidden', 2 * GIB, 'kernel')]);
    assert.equal(kernelUsage(snapshot([gpu0], [k]), 'k'), null);
  });
});
