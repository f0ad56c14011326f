// The delivery audit every reliability scenario ends with (faults.mjs `audit`) must itself
// catch what it claims to: repeats, holes, disorder, holes excused only at a reported gap
// and only for events that were really gone. No browser, no server: synthetic deliveries.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertDelivery, audit } from './faults.mjs';

const msgs = (...seqs) => seqs.map((s) => [s, `1-${s}`]);

test('a complete delivery audits clean', () => {
  const a = audit({ messages: msgs(1, 2, 3, 4, 5), firstOwed: 1, lastSent: 5 });
  assert.deepEqual([a.sent, a.received, a.duplicates, a.outOfOrder, a.missing, a.lost, a.gaps], [5, 5, 0, 0, 0, 0, 0]);
});

test('events before the first owed one may be delivered, but a hole anywhere is missing', () => {
  assert.equal(audit({ messages: msgs(2, 3, 4, 5), firstOwed: 3, lastSent: 5 }).missing, 0);
  assert.equal(audit({ messages: msgs(2, 4, 5), firstOwed: 3, lastSent: 5 }).missing, 1);
  assert.equal(audit({ messages: msgs(4, 5), firstOwed: 3, lastSent: 5 }).missing, 1, 'an owed first event is missing');
  assert.equal(audit({ messages: msgs(1, 2, 3), firstOwed: 1, lastSent: 5 }).missing, 2, 'a missing tail counts');
});

test('repeats and disorder are counted', () => {
  const a = audit({ messages: msgs(1, 2, 2, 3, 5, 4), firstOwed: 1, lastSent: 5 });
  assert.equal(a.duplicates, 1);
  assert.equal(a.outOfOrder, 1);
  assert.equal(a.missing, 0);
});

test('a hole is excused only at a reported gap and only for events really gone', () => {
  const gone = (s) => s <= 6;
  // 4..6 lost, gap reported between 3 and 7: excused.
  let a = audit({ messages: msgs(1, 2, 3, 7, 8), gaps: [{ at: 3 }], firstOwed: 1, lastSent: 8, reallyGone: gone });
  assert.deepEqual([a.missing, a.lost, a.gaps], [0, 3, 1]);
  // The same hole without a gap event: missing.
  a = audit({ messages: msgs(1, 2, 3, 7, 8), firstOwed: 1, lastSent: 8, reallyGone: gone });
  assert.deepEqual([a.missing, a.lost], [3, 0]);
  // A gap reported somewhere else does not excuse it.
  a = audit({ messages: msgs(1, 2, 3, 7, 8), gaps: [{ at: 1 }], firstOwed: 1, lastSent: 8, reallyGone: gone });
  assert.equal(a.missing, 3);
  // Events the server still had are not excused by the gap.
  a = audit({ messages: msgs(1, 2, 3, 8), gaps: [{ at: 3 }], firstOwed: 1, lastSent: 8, reallyGone: gone });
  assert.deepEqual([a.missing, a.lost], [1, 3], 'event 7 was still held: missing');
  // Nothing may be missing after the gap.
  a = audit({ messages: msgs(1, 2, 3, 7, 9), gaps: [{ at: 3 }], firstOwed: 1, lastSent: 9, reallyGone: gone });
  assert.deepEqual([a.missing, a.lost], [1, 3]);
});

test('numbers whose publish had no answer are not owed, but still at most once', () => {
  const uncertain = new Set([3]);
  assert.equal(audit({ messages: msgs(1, 2, 4), firstOwed: 1, lastSent: 4, uncertain }).missing, 0);
  assert.equal(audit({ messages: msgs(1, 2, 3, 3, 4), firstOwed: 1, lastSent: 4, uncertain }).duplicates, 1);
});

test('a scenario that published nothing while the client was open fails the delivery check', () => {
  // Nothing owed: the audit is clean, but proves nothing.
  const empty = audit({ messages: [], firstOwed: 6, lastSent: 5 });
  assert.deepEqual([empty.sent, empty.missing, empty.duplicates], [0, 0, 0]);
  assert.throws(() => assertDelivery(assert, empty), /events were published while the client was open/);
  // Only uncertain numbers: nothing owed either.
  const unsure = audit({ messages: [], firstOwed: 1, lastSent: 2, uncertain: new Set([1, 2]) });
  assert.equal(unsure.sent, 0);
  assert.throws(() => assertDelivery(assert, unsure), /events were published/);
  assertDelivery(assert, audit({ messages: msgs(1, 2), firstOwed: 1, lastSent: 2 }));
});
