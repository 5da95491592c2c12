/** `flotilla/filters`: quantization, exclusion and user filters as transforms of the tensor stream (docs/filters.md). */
export * from './types.ts';
export * from './codecs.ts';
export * from './quantize.ts';
export * from './exclude.ts';
export * from './patterns.ts';
export * from './spec.ts';
export * from './chain.ts';
export * from './policy.ts';
export * from './dp.ts';
export * from './rdp.ts';
export * from './update-spool.ts';
export * from './he-context.ts';
export * from './he-stream.ts';
