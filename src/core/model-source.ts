/**
 * A model that can be read more than once (a broadcast sends the same global
 * model to every client): something that opens a fresh tensor stream on demand.
 */
import type { StreamHeader, TensorStream } from './tensor-stream.ts';
import { dictToStream } from './tensor-stream.ts';
import type { TensorDict } from './tensor.ts';

export interface ModelSource {
  readonly header: StreamHeader;
  open(chunkBytes?: number): TensorStream;
}

export function dictSource(dict: TensorDict, metadata: Record<string, string> = {}): ModelSource {
  const first = dictToStream(dict, { metadata });
  return {
    header: first.header,
    open: (chunkBytes?: number) => dictToStream(dict, chunkBytes === undefined ? { metadata } : { metadata, chunkBytes }),
  };
}
