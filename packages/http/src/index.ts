export { createIdempotency, type Idempotency, type ClaimInput, type Claim, type ClaimOutcome, type HandlerContext, type IdempotentHandler, type HandleOptions, type HandleResult, type PruneOptions } from './idempotency';
export { resolveIdempotencyOptions, DEFAULT_STORED_HEADERS, type IdempotencyOptions, type ResolvedIdempotencyOptions } from './options';
export { requestFingerprint, canonicalJson } from './fingerprint';
export { parseIdempotencyKey, type ParsedKey, type KeyProblem } from './idempotency-key';
export { problemResponse, type ProblemName } from './problem';
export { IDEMPOTENCY_METRICS, IdempotencyMetric } from './metrics';
export { idempotentExpress, sendExpress, type ExpressIdempotencyOptions, type ExpressLikeRequest, type ExpressLikeResponse } from './express';
export { idempotentFastify, sendFastify, type FastifyIdempotencyOptions, type FastifyLikeRequest, type FastifyLikeReply } from './fastify';
export type { JsonValue, IdempotentRequest, HandlerResponse, HttpResponse, StoredResponse } from './types';
