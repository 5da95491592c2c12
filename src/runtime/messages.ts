/**
 * The runtime's control messages between server and clients. Every incoming
 * message is parsed with these schemas; anything else is rejected without
 * affecting other sites.
 */
import { z } from 'zod';
import { FLModelInfoSchema } from '../core/fl-model.ts';
import { LOG_LIMITS } from '../client/api.ts';

export const RUNTIME_PROTOCOL = 1;

const SiteName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'site names are 1–64 letters, digits, "_", "." or "-"');

export const ClientMessageSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('register'), site: SiteName, protocol: z.number().int() }),
  z.strictObject({ type: z.literal('heartbeat') }),
  z.discriminatedUnion('status', [
    z.strictObject({
      type: z.literal('result'),
      taskId: z.string().min(1).max(128),
      status: z.literal('ok'),
      info: FLModelInfoSchema,
      hasParams: z.boolean(),
    }),
    z.strictObject({
      type: z.literal('result'),
      taskId: z.string().min(1).max(128),
      status: z.literal('error'),
      error: z.string().max(65536),
    }),
  ]),
  z.strictObject({
    type: z.literal('metric'),
    key: z.string().min(1).max(LOG_LIMITS.keyChars),
    value: z.number(),
    step: z.number().int().optional(),
    round: z.number().int().optional(),
  }),
  z.strictObject({
    type: z.literal('text'),
    key: z.string().min(1).max(LOG_LIMITS.keyChars),
    text: z.string().max(LOG_LIMITS.textChars),
    step: z.number().int().optional(),
    round: z.number().int().optional(),
  }),
  z.strictObject({
    type: z.literal('params'),
    params: z
      .record(z.string().min(1).max(LOG_LIMITS.keyChars), z.union([z.string().max(LOG_LIMITS.paramChars), z.number(), z.boolean()]))
      .refine((p) => Object.keys(p).length <= LOG_LIMITS.params, `at most ${LOG_LIMITS.params} params per message`),
  }),
]);
export type ClientMessage = z.infer<typeof ClientMessageSchema>;

export const ServerMessageSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('registered'),
    site: SiteName,
    jobId: z.string(),
    /** how often the server wants a heartbeat on the job's connection (it drops a site silent for 4×) */
    heartbeatSeconds: z.number().positive().max(86_400).optional(),
  }),
  z.strictObject({ type: z.literal('rejected'), reason: z.string() }),
  z.strictObject({
    type: z.literal('task'),
    taskId: z.string().min(1).max(128),
    taskName: z.string().min(1).max(128),
    info: FLModelInfoSchema,
    hasParams: z.boolean(),
  }),
  z.strictObject({ type: z.literal('end'), reason: z.string() }),
  /** the server no longer wants this task's result (timed out, its round is over, the job aborts): stop it */
  z.strictObject({ type: z.literal('cancel'), taskId: z.string().min(1).max(128), reason: z.string().max(65536) }),
]);
export type ServerMessage = z.infer<typeof ServerMessageSchema>;
