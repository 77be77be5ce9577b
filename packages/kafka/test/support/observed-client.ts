import type { TestClient } from '@effectively/testkit';
import { createKafkajsConsumer, createPlatformaticConsumer, type Assignment, type ConsumerClient, type KafkaClientSettings } from '../../src';

/** What a member's Kafka client was told and asked, in order. */
export interface ClientObservations {
  /** Every assignment the member received (each join and rejoin). */
  assignments: Assignment[];
  /** Every `pause(topic, partition)` the consumer made, as `topic:partition`. */
  pauses: string[];
}

/** Whether `assignment` holds `partition` of `topic`. */
export function holds(assignment: Assignment | undefined, topic: string, partition: number): boolean {
  return assignment?.partitions.some((p) => p.topic === topic && p.partition === partition) ?? false;
}

/**
 * The `client` option for a consumer on `choice` (the real kafkajs or @platformatic/kafka
 * client, through the public injected-client seam) that records its assignments and pauses in
 * `seen`; everything else passes through unchanged.
 */
export function observedClient(choice: TestClient, seen: ClientObservations): (settings: KafkaClientSettings) => ConsumerClient {
  return (settings) => {
    const inner = (choice === 'platformatic' ? createPlatformaticConsumer : createKafkajsConsumer)(settings);
    // Registered before the consumer's own listener, so an assignment is recorded before the consumer acts on it.
    inner.onAssignment((assignment) => seen.assignments.push({ memberId: assignment.memberId, partitions: [...assignment.partitions] }));
    return new Proxy(inner, {
      get(target, property) {
        if (property === 'pause') {
          return (topic: string, partition: number): void => {
            seen.pauses.push(`${topic}:${partition}`);
            target.pause(topic, partition);
          };
        }
        // The platformatic client is a class: its methods need their own `this`.
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
  };
}
