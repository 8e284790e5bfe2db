import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatBytes, formatPart } from '../src/format';

const KIB = 1024;
const MIB = 1024 ** 2;
const GIB = 1024 ** 3;

describe('formatBytes', () => {
  it('shows whole bytes without a fraction, rounded', () => {
    assert.equal(formatBytes(0), '0 B');
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1023), '1023 B');
    assert.equal(formatBytes(2.6), '3 B');
  });

  it('switches to the next binary unit at 1024, with one decimal', () => {
    assert.equal(formatBytes(KIB), '1.0 KiB');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(300 * MIB), '300.0 MiB');
    assert.equal(formatBytes(512 * MIB), '512.0 MiB');
    assert.equal(formatBytes(GIB), '1.0 GiB');
    assert.equal(formatBytes(5.1 * GIB), '5.1 GiB');
    assert.equal(formatBytes(141 * GIB), '141.0 GiB'); // an H200
    assert.equal(formatBytes(2 * 1024 ** 4), '2.0 TiB');
  });

  it('rounds to one decimal rather than truncating', () => {
    assert.equal(formatBytes(3.25 * GIB + 0.01 * GIB), '3.3 GiB');
    assert.equal(formatBytes(3.24 * GIB), '3.2 GiB');
  });

  it('stops at PiB', () => {
    assert.equal(formatBytes(1024 ** 5), '1.0 PiB');
    assert.equal(formatBytes(1024 ** 6), '1024.0 PiB');
  });

  it('keeps the sign and picks the unit by magnitude', () => {
    assert.equal(formatBytes(-2 * KIB), '-2.0 KiB');
    assert.equal(formatBytes(-100), '-100 B');
  });
});

describe('formatPart', () => {
  it('shows the part in the unit of the whole', () => {
    assert.equal(formatPart(5.1 * GIB, 8 * GIB), '5.1 / 8.0 GiB');
    assert.equal(formatPart(300 * MIB, 8 * GIB), '0.3 / 8.0 GiB');
    assert.equal(formatPart(0, 40 * GIB), '0.0 / 40.0 GiB');
  });

  it('keeps that unit even when the part alone would read in a larger one', () => {
    assert.equal(formatPart(3 * GIB, 512 * MIB), '3072.0 / 512.0 MiB');
  });

  it('shows whole bytes when the whole is under a KiB', () => {
    assert.equal(formatPart(100, 512), '100 / 512 B');
    assert.equal(formatPart(0, 0), '0 / 0 B');
  });
});
