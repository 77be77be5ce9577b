import { randomUUID } from 'node:crypto';
import express, { type NextFunction, type Request, type Response } from 'express';
import { sql } from 'kysely';
import type { Registry } from 'prom-client';
import { createOutbox, type Logger } from '@effectively/core';
import { idempotentExpress, keepRawBody, type Idempotency } from '@effectively/http';

/** A payment request after validation. */
type PaymentInput = { amount: number; currency: string; customer: string };

/** The JSON the API answers with. */
type Payment = PaymentInput & { id: string; account: string; status: 'succeeded'; createdAt: string };

/** The caller's account: a real API takes it from the authenticated principal; the demo trusts a header. */
const accountOf = (req: Request): string => req.get('x-account-id') ?? 'demo';

function parsePayment(body: unknown): PaymentInput | string {
  if (body === null || typeof body !== 'object') return 'send a JSON object: {"amount": 1999, "currency": "EUR", "customer": "cus_42"}';
  const { amount, currency, customer } = body as Record<string, unknown>;
  if (typeof amount !== 'number' || !Number.isSafeInteger(amount) || amount <= 0) return 'amount must be a positive integer (minor units, e.g. cents)';
  if (typeof currency !== 'string' || !/^[A-Z]{3}$/.test(currency)) return 'currency must be an ISO 4217 code such as "EUR"';
  if (typeof customer !== 'string' || customer === '' || customer.length > 100) return 'customer must be a non-empty string of at most 100 characters';
  return { amount, currency, customer };
}

/**
 * The payments API: `POST /payments` (idempotent: send an `Idempotency-Key`), `GET /payments/:id`
 * and `GET /metrics`. Invalid input is refused before the key is claimed, so a corrected
 * request may reuse the key (Stripe does the same).
 */
export function createPaymentsApp(options: { idempotency: Idempotency; schema: string; registry: Registry; logger: Logger }): express.Express {
  const { idempotency, schema, registry, logger } = options;
  const outbox = createOutbox({ schema });
  const app = express();
  app.use(express.json({ verify: keepRawBody })); // the key is bound to the body bytes as received

  const validate = (req: Request, res: Response, next: NextFunction): void => {
    const parsed = parsePayment(req.body);
    if (typeof parsed === 'string') {
      res.status(400).type('application/problem+json').send(JSON.stringify({ type: 'about:blank', title: 'Bad Request', status: 400, detail: parsed }));
      return;
    }
    next();
  };

  app.post(
    '/payments',
    validate,
    idempotentExpress(idempotency, { scope: accountOf }, async (req: Request, { db, key }) => {
      const input = parsePayment(req.body) as PaymentInput;
      const account = accountOf(req);
      const id = randomUUID();
      const row = await sql<{ created_at: Date }>`
        INSERT INTO ${sql.id(schema, 'payments')} (id, account, amount, currency, customer)
        VALUES (${id}, ${account}, ${input.amount}, ${input.currency}, ${input.customer})
        RETURNING created_at`.execute(db);
      const payment: Payment = { id, account, ...input, status: 'succeeded', createdAt: (row.rows[0]?.created_at ?? new Date()).toISOString() };
      // Same transaction as the payment and the stored response: published exactly when they commit.
      await outbox.publish(db, [{ eventId: `payment-created:${account}:${key ?? id}`, topic: 'payments', key: id, value: payment }]);
      logger.info({ paymentId: id, account, idempotencyKey: key }, 'payment created');
      return { status: 201, headers: { location: `/payments/${id}` }, json: payment };
    }),
  );

  app.get('/payments/:id', async (req: Request<{ id: string }>, res: Response) => {
    if (!/^[0-9a-f-]{36}$/.test(req.params.id)) {
      res.status(404).end();
      return;
    }
    const r = await sql<Record<string, unknown>>`SELECT * FROM ${sql.id(schema, 'payments')} WHERE id = ${req.params.id} AND account = ${accountOf(req)}`.execute(idempotency.options.db);
    if (r.rows[0] === undefined) res.status(404).end();
    else res.json(r.rows[0]);
  });

  app.get('/metrics', async (_req: Request, res: Response) => {
    res.type(registry.contentType).send(await registry.metrics());
  });
  return app;
}
