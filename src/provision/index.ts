/** `flotilla/provision`: project files, certificates and signed startup kits. */
export * from './project.ts';
export * from './ca.ts';
export * from './kit.ts';
export * from './provision.ts';
