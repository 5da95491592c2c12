/**
 * A model in memory or in a safetensors file, behind one type: what a job's
 * chain of workflows hands from one workflow to the next. It opens streams
 * (a broadcast reads it once per site), materializes (a workflow that needs
 * the tensors in memory) and persists (a workflow that keeps it on disk).
 *
 * `take()` gives the tensors away: the reference forgets them, so whoever
 * held the ref (a caller's frame, the chain's loop) does not keep a whole
 * model alive while the next workflow produces its own.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { type ModelSource, dictSource, fileSource } from './model-source.ts';
import { SafetensorsFile, readSafetensors, writeSafetensors } from './safetensors.ts';
import type { TensorDict } from './tensor.ts';

export class ModelRef {
  private tensors: TensorDict | null;
  private taken = false;

  private constructor(
    tensors: TensorDict | null,
    /** the safetensors file, for a model on disk */
    readonly path: string | undefined,
    /** safetensors metadata (a model card, a format tag) */
    readonly metadata: Readonly<Record<string, string>>,
  ) {
    this.tensors = tensors;
  }

  /** Tensors in memory. */
  static memory(tensors: TensorDict, metadata: Record<string, string> = {}): ModelRef {
    return new ModelRef(tensors, undefined, metadata);
  }

  /** A safetensors file; its header is read now, so a bad file fails here and not in round 1. */
  static async file(path: string): Promise<ModelRef> {
    const f = await SafetensorsFile.open(path);
    try {
      return new ModelRef(null, path, { ...f.metadata });
    } finally {
      await f.close();
    }
  }

  /** a workflow took the tensors (take()): the ref holds nothing any more */
  get released(): boolean {
    return this.taken;
  }

  get onDisk(): boolean {
    return this.path !== undefined;
  }

  private check(): void {
    if (this.taken) throw new Error('this model was already taken by a workflow (ModelRef.take())');
  }

  /** A re-readable source: streams the tensors from memory, or the file from disk again each time. */
  async source(): Promise<ModelSource> {
    this.check();
    if (this.path !== undefined) return fileSource(this.path);
    return dictSource(this.tensors!);
  }

  /** The tensors in memory (read from the file when on disk); the ref keeps them. */
  async materialize(): Promise<TensorDict> {
    this.check();
    if (this.tensors) return this.tensors;
    return (await readSafetensors(this.path!)).tensors;
  }

  /** The tensors, handed over: the ref forgets them (and cannot be used again). */
  async take(): Promise<TensorDict> {
    const t = await this.materialize();
    this.tensors = null;
    this.taken = true;
    return t;
  }

  /**
   * The model as a file: the ref's own file when on disk, else the tensors are written to
   * `path` (with `metadata` over the ref's) and a file ref to it comes back.
   */
  async persist(path: string, metadata: Record<string, string> = {}): Promise<ModelRef> {
    this.check();
    if (this.path !== undefined) return this;
    mkdirSync(dirname(path), { recursive: true });
    await writeSafetensors(path, this.tensors!, { ...this.metadata, ...metadata });
    return ModelRef.file(path);
  }
}
