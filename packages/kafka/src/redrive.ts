import type { RawMessage } from './kafka-adapter';

/**
 * The header a deliberate re-drive (a dead-letter replay) carries: the replay's id. A record of
 * a dead-lettered event with a re-drive id its record has not applied yet is handled again, once;
 * a copy of the same replay, or a plain copy without the header, is a duplicate.
 */
export const REDRIVE_HEADER = 'effectively-redrive';

const decoder = new TextDecoder('utf-8', { fatal: true });

/** The re-drive id of `message`: clean UTF-8 of 1-255 bytes without NUL, else none. */
export function readRedriveId(message: RawMessage): string | undefined {
  const raw = message.headers[REDRIVE_HEADER];
  const first = Array.isArray(raw) ? raw[0] : raw;
  if (first === undefined) return undefined;
  const bytes = Buffer.isBuffer(first) ? first : Buffer.from(first, 'utf8');
  if (bytes.length === 0 || bytes.length > 255) return undefined;
  try {
    const text = decoder.decode(bytes);
    return text.includes('\u0000') ? undefined : text;
  } catch {
    return undefined;
  }
}
