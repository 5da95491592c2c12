/** An MLflow tracking server's address as the exporter takes it; no imports, so the CLI checks a flag without loading the exporter. */

/** Why `uri` is no MLflow tracking server's address (an http or https URL without credentials), or null when it is one. */
export function mlflowUriProblem(uri: string): string | null {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return `"${uri}" is not a URL (an MLflow tracking server is http://host:port)`;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `"${uri}" is not http(s): an MLflow tracking server is http://host:port`;
  if (u.username || u.password)
    return `"${u.host}": credentials in the URL would be written to logs; MLflow behind auth is not supported yet`;
  if (u.search || u.hash) return `"${uri}": an MLflow tracking server's address takes no query or fragment`;
  return null;
}
