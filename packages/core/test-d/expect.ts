/**
 * Type-level assertions for the `test-d` files, which `npm run typecheck` compiles (they never
 * run): `expectType<Equal<A, B>>(true)` fails to compile unless A and B are the same type.
 */
export type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false;

/** Compiles only when `T` is `true`. */
export function expectType<T extends true>(_proof: T): void {}

/** A user's database as `kysely-codegen` would describe it. */
export interface UserDatabase {
  orders: { id: string; customer: string; total_cents: number };
  order_lines: { order_id: string; sku: string; quantity: number };
}

/** A user's message type, declared as an `interface` (no index signature). */
export interface OrderCreated {
  orderId: string;
  totalCents: number;
  lines: Array<{ sku: string; quantity: number }>;
}
