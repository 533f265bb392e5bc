import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatBytes } from '../../www/format.js';

test('formatBytes uses binary units and trims zeros', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(128 * 1024 * 1024), '128 MiB');
  assert.equal(formatBytes(2 ** 30), '1 GiB');
  assert.equal(formatBytes(4294967296 * 1.25), '5 GiB');
  assert.equal(formatBytes(-1), 'unknown');
  assert.equal(formatBytes('x'), 'unknown');
});
