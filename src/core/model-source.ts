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

/** A safetensors file as a re-readable model: each open() streams it from disk again. */
export async function fileSource(path: string): Promise<ModelSource> {
  const { SafetensorsFile } = await import('./safetensors.ts');
  const probe = await SafetensorsFile.open(path);
  const header = probe.stream().header;
  await probe.close();
  return {
    header,
    open(chunkBytes?: number) {
      return {
        header,
        async *pieces() {
          const f = await SafetensorsFile.open(path);
          try {
            yield* f.stream(chunkBytes === undefined ? {} : { chunkBytes }).pieces();
          } finally {
            await f.close();
          }
        },
      };
    },
  };
}
