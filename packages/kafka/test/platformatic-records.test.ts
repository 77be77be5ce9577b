import { readPartition, type FetchedRecordBatch } from '../src/platformatic-records';

/**
 * What a fetched partition holds for the handler under read_committed, on record batches shaped
 * as @platformatic/kafka decodes them (data, no client): aborted transactions left out also when
 * their abort marker lies beyond the fetch, the last offset covering markers.
 */
describe('reading a fetched partition (platformatic client)', () => {
  const TRANSACTIONAL = 1 << 4;
  const CONTROL = 1 << 5;
  const batch = (firstOffset: number, count: number, attrs: { producerId?: number; transactional?: boolean } = {}): FetchedRecordBatch => ({
    firstOffset: BigInt(firstOffset),
    lastOffsetDelta: count - 1,
    attributes: attrs.transactional === true ? TRANSACTIONAL : 0,
    producerId: BigInt(attrs.producerId ?? -1),
    firstTimestamp: 1_700_000_000_000n,
    maxTimestamp: 1_700_000_000_000n,
    records: Array.from({ length: count }, (_, i) => ({ offsetDelta: i, timestampDelta: BigInt(i), key: Buffer.from(`k${firstOffset + i}`), value: Buffer.from(`v${firstOffset + i}`), headers: [[Buffer.from('event-id'), Buffer.from(`e${firstOffset + i}`)]] })),
  });
  const marker = (offset: number, producerId: number, type: 'abort' | 'commit'): FetchedRecordBatch => {
    const key = Buffer.alloc(4);
    key.writeInt16BE(0, 0);
    key.writeInt16BE(type === 'abort' ? 0 : 1, 2);
    return { ...batch(offset, 1, { producerId, transactional: true }), attributes: TRANSACTIONAL | CONTROL, records: [{ offsetDelta: 0, timestampDelta: 0n, key, value: Buffer.alloc(6), headers: [] }] };
  };
  const offsets = (r: ReturnType<typeof readPartition>): string[] => r.messages.map((m) => m.offset);

  it('plain records from the fetch offset on (a compressed batch may start before it), with headers and timestamps', () => {
    const r = readPartition('t', 0, 2n, { highWatermark: 5n, abortedTransactions: null, records: [batch(0, 5)] });
    expect(offsets(r)).toEqual(['2', '3', '4']);
    expect(r.lastOffset).toBe(4n);
    expect(r.highWatermark).toBe(5n);
    expect(r.messages[0]).toMatchObject({ topic: 't', partition: 0, key: Buffer.from('k2'), value: Buffer.from('v2'), headers: { 'event-id': Buffer.from('e2') }, timestamp: '1700000000002' });
  });

  it('a committed transaction is delivered without its marker; an aborted one (marker in the fetch) is not; the last offset is the marker', () => {
    const r = readPartition('t', 0, 0n, {
      highWatermark: 8n,
      abortedTransactions: [{ producerId: 7n, firstOffset: 4n }],
      records: [batch(0, 3, { producerId: 5, transactional: true }), marker(3, 5, 'commit'), batch(4, 3, { producerId: 7, transactional: true }), marker(7, 7, 'abort')],
    });
    expect(offsets(r)).toEqual(['0', '1', '2']);
    expect(r.lastOffset).toBe(7n);
  });

  it("an aborted transaction whose marker lies beyond this fetch is left out too; the same producer's next transaction is delivered", () => {
    const cut = readPartition('t', 0, 0n, { highWatermark: 20n, abortedTransactions: [{ producerId: 7n, firstOffset: 0n }], records: [batch(0, 3, { producerId: 7, transactional: true })] });
    expect(offsets(cut)).toEqual([]);
    expect(cut.lastOffset).toBe(2n);
    const next = readPartition('t', 0, 0n, {
      highWatermark: 20n,
      abortedTransactions: [{ producerId: 7n, firstOffset: 0n }],
      records: [batch(0, 3, { producerId: 7, transactional: true }), marker(3, 7, 'abort'), batch(4, 2, { producerId: 7, transactional: true }), marker(6, 7, 'commit')],
    });
    expect(offsets(next)).toEqual(['4', '5']);
  });

  it('an abort marker below the fetch offset still ends its transaction', () => {
    const r = readPartition('t', 0, 4n, {
      highWatermark: 7n,
      abortedTransactions: [{ producerId: 7n, firstOffset: 0n }],
      records: [batch(0, 3, { producerId: 7, transactional: true }), marker(3, 7, 'abort'), batch(4, 2, { producerId: 7, transactional: true }), marker(6, 7, 'commit')],
    });
    expect(offsets(r)).toEqual(['4', '5']);
    expect(r.lastOffset).toBe(6n);
  });

  it('only markers: nothing for the handler, the last offset still moves past them', () => {
    const r = readPartition('t', 0, 3n, { highWatermark: 4n, abortedTransactions: [], records: [marker(3, 5, 'commit')] });
    expect(r.messages).toEqual([]);
    expect(r.lastOffset).toBe(3n);
  });

  it('a repeated header becomes an array in order; a null header value is left out (as a missing header)', () => {
    const b = batch(0, 1);
    (b.records[0] as { headers: Array<[Buffer | null, Buffer | null]> }).headers = [[Buffer.from('h'), Buffer.from('1')], [Buffer.from('h'), Buffer.from('2')], [Buffer.from('n'), null]];
    const [m] = readPartition('t', 0, 0n, { highWatermark: 1n, abortedTransactions: null, records: [b] }).messages;
    expect(m?.headers).toEqual({ h: [Buffer.from('1'), Buffer.from('2')] });
  });
});
