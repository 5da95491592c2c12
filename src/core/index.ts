/** `flotilla/core`: tensors, dtypes, FLModel, safetensors files and tensor streams. */
export * from './tensor.ts';
export * from './dtypes.ts';
export * from './fl-model.ts';
export * from './safetensors.ts';
export * from './safetensors-header.ts';
export * from './tensor-stream.ts';
export * from './model-source.ts';
export * from './apply-result.ts';
export * from './model-ref.ts';
export * from './model-definition.ts';
