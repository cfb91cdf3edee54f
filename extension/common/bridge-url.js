// Bridge URL handling (DESIGN.md "Extension": the bridge URL is what `parley run` prints).
// Only loopback plain-http URLs are accepted; the WebSocket URL is derived from them.

export const DEFAULT_PORT = 8737;
export const DEFAULT_BRIDGE_URL = `http://127.0.0.1:${DEFAULT_PORT}`;

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost']);

export class BridgeUrlError extends Error {
  constructor(message) {
    super(message);
    this.name = 'BridgeUrlError';
  }
}

/**
 * Validate a bridge URL and return its canonical form `http://HOST:PORT`.
 * Accepts `http://127.0.0.1:PORT[/...]`, `http://localhost:PORT`, a bare `127.0.0.1:PORT` or a
 * bare port number. Throws BridgeUrlError for anything else (https, other hosts, credentials).
 */
export function normalizeBridgeUrl(input) {
  if (typeof input !== 'string') throw new BridgeUrlError('bridge URL must be a string');
  let text = input.trim();
  if (text === '') return DEFAULT_BRIDGE_URL;
  if (/^\d{1,5}$/.test(text)) text = `http://127.0.0.1:${text}`;
  else if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) text = `http://${text}`;
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new BridgeUrlError('not a URL');
  }
  if (url.protocol !== 'http:') throw new BridgeUrlError('the bridge URL must start with http://');
  if (url.username || url.password) throw new BridgeUrlError('credentials are not allowed in the bridge URL');
  if (!LOOPBACK_HOSTS.has(url.hostname)) throw new BridgeUrlError('the bridge must be on this machine (127.0.0.1)');
  const port = url.port === '' ? 80 : Number(url.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new BridgeUrlError('bad port');
  return `http://${url.hostname}:${port}`;
}

/** Derive the JSON-RPC WebSocket URL (`ws://HOST:PORT/v1/rpc`) from a bridge URL. */
export function wsUrlFor(bridgeUrl) {
  const base = normalizeBridgeUrl(bridgeUrl);
  return `ws://${base.slice('http://'.length)}/v1/rpc`;
}
