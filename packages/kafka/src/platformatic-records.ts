/**
 * Turns one partition of a @platformatic/kafka fetch response into what the consumer hands on:
 * the records for the handler (transaction markers and records of aborted transactions left
 * out), the offset of the last record the fetch covered, and the high watermark. Pure data in,
 * data out: the shapes below are the few fields of the client's `RecordsBatch` and fetch
 * response partition this needs, declared here so nothing else depends on the client's types.
 */
import type { RawMessage } from './kafka-adapter';

/** One record of a record batch. */
export interface FetchedRecord {
  offsetDelta: number;
  timestampDelta: bigint;
  key: Buffer | null;
  value: Buffer | null;
  headers: Array<[Buffer | null, Buffer | null]>;
}

/** One record batch as the client decodes it. */
export interface FetchedRecordBatch {
  firstOffset: bigint;
  lastOffsetDelta: number;
  attributes: number;
  producerId: bigint;
  firstTimestamp: bigint;
  maxTimestamp: bigint;
  records: FetchedRecord[];
}

/** One partition of a fetch response. */
export interface FetchedPartitionData {
  highWatermark: bigint;
  abortedTransactions: Array<{ producerId: bigint; firstOffset: bigint }> | null;
  records?: FetchedRecordBatch[] | null;
}

/** What a fetched partition holds for the consumer. */
export interface ReadPartition {
  /** Records for the handler, in offset order, none below the fetch offset. */
  messages: RawMessage[];
  /** The last offset the fetch covered (markers and aborted records included); undefined when it held no record at or past the fetch offset. */
  lastOffset: bigint | undefined;
  highWatermark: bigint;
}

const IS_TRANSACTIONAL = 1 << 4;
const IS_CONTROL = 1 << 5;
const LOG_APPEND_TIME = 1 << 3;
/** Control record type of an abort marker (the second int16 of the control record's key). */
const ABORT_MARKER = 0;

/**
 * Reads `data` fetched from `fetchOffset` with isolation `read_committed`, as Kafka's own
 * consumer does: a transactional batch of a producer listed in `abortedTransactions` (from that
 * transaction's first offset on) is aborted until that producer's abort marker. The client drops
 * some aborted batches itself (those whose marker is in the same response); this also drops the
 * ones whose marker lies beyond the response (cut by the byte limit), which the client keeps.
 */
export function readPartition(topic: string, partition: number, fetchOffset: bigint, data: FetchedPartitionData): ReadPartition {
  const messages: RawMessage[] = [];
  let lastOffset: bigint | undefined;
  const aborted = [...(data.abortedTransactions ?? [])].sort((a, b) => (a.firstOffset < b.firstOffset ? -1 : a.firstOffset > b.firstOffset ? 1 : 0));
  const abortedProducers = new Set<bigint>();
  for (const batch of data.records ?? []) {
    const batchLast = batch.firstOffset + BigInt(batch.lastOffsetDelta);
    const control = (batch.attributes & IS_CONTROL) !== 0;
    let skip = control;
    // Kept for every batch, also those below the fetch offset: a marker there ends its transaction.
    if ((batch.attributes & IS_TRANSACTIONAL) !== 0) {
      while (aborted.length > 0 && (aborted[0] as { firstOffset: bigint }).firstOffset <= batchLast) abortedProducers.add((aborted.shift() as { producerId: bigint }).producerId);
      if (control && isAbortMarker(batch)) abortedProducers.delete(batch.producerId);
      else if (abortedProducers.has(batch.producerId)) skip = true;
    }
    if (batchLast < fetchOffset) continue;
    if (lastOffset === undefined || batchLast > lastOffset) lastOffset = batchLast;
    if (skip) continue;
    const logAppendTime = (batch.attributes & LOG_APPEND_TIME) !== 0;
    for (const record of batch.records) {
      const offset = batch.firstOffset + BigInt(record.offsetDelta);
      if (offset < fetchOffset) continue;
      messages.push({
        topic,
        partition,
        offset: offset.toString(),
        key: record.key,
        value: record.value,
        headers: headersOf(record.headers),
        timestamp: (logAppendTime ? batch.maxTimestamp : batch.firstTimestamp + record.timestampDelta).toString(),
      });
    }
  }
  return { messages, lastOffset, highWatermark: data.highWatermark };
}

function isAbortMarker(batch: FetchedRecordBatch): boolean {
  const key = batch.records[0]?.key;
  return key !== null && key !== undefined && key.length >= 4 && key.readInt16BE(2) === ABORT_MARKER;
}

/** Headers as kafkajs gives them: a repeated key becomes an array, in order; a null value is left out. */
function headersOf(entries: Array<[Buffer | null, Buffer | null]>): RawMessage['headers'] {
  const out: RawMessage['headers'] = {};
  for (const [k, v] of entries) {
    if (k === null || v === null) continue;
    const name = k.toString('utf8');
    const existing = out[name];
    if (existing === undefined) out[name] = v;
    else if (Array.isArray(existing)) existing.push(v);
    else out[name] = [existing, v];
  }
  return out;
}
