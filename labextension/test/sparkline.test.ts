import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { IKernel } from '../src/api';
import { KernelHistory, sparklinePoints } from '../src/sparkline';

function kernel(id: string, bytes: number): IKernel {
  return {
    id,
    name: 'python3',
    execution_state: 'idle',
    pid: null,
    session: null,
    devices: [],
    bytes,
    vram_magic: null
  };
}

describe('KernelHistory', () => {
  it('keeps each kernel over the window and forgets kernels that are gone', () => {
    const history = new KernelHistory(60);
    history.record([kernel('a', 1), kernel('b', 5)], 0);
    history.record([kernel('a', 2), kernel('b', 6)], 30);
    history.record([kernel('a', 3)], 70);
    assert.deepEqual(history.points('a'), [
      { t: 30, bytes: 2 },
      { t: 70, bytes: 3 }
    ]);
    assert.deepEqual(history.points('b'), []);
  });
});

describe('sparklinePoints', () => {
  it('puts the latest point at the right edge and scales to the largest', () => {
    const points = sparklinePoints(
      [
        { t: 0, bytes: 0 },
        { t: 150, bytes: 50 },
        { t: 300, bytes: 100 }
      ],
      100,
      20,
      0,
      300
    );
    assert.equal(points, '0.0,19.0 50.0,10.0 100.0,1.0');
  });

  it('draws nothing without points', () => {
    assert.equal(sparklinePoints([], 100, 20, 0), '');
  });
});
