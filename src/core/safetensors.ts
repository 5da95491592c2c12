/**
 * Streaming safetensors files: the writer (safetensors-writer.ts) and the reader
 * (safetensors-reader.ts); neither ever needs the whole model in memory.
 */
export { SafetensorsError } from './safetensors-header.ts';
export * from './safetensors-writer.ts';
export * from './safetensors-reader.ts';
