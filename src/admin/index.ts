/** `flotilla/admin`: the admin client (submit, status, abort, download over mutual TLS). */
export * from './admin-client.ts';
