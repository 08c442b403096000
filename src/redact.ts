/**
 * Credential redaction. Every URL and message that reaches a terminal, a log
 * or a JSON document passes through here (amacneil/dbmate `redactLogString`).
 */

const URL_PASSWORD = /\b(postgres(?:ql)?:\/\/[^:/?#@\s]*:)([^@\s]*)(@)/gi;
const KEYWORD_PASSWORD = /\b(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]+)/gi;

const knownSecrets = new Set<string>();

/** Registers a secret (a password) so that redactText() masks it wherever it appears. */
export function registerSecret(secret: string | undefined): void {
  if (secret && secret.length >= 3) knownSecrets.add(secret);
}

/** Shows a connection URL as `postgres://user:***@host:5432/db`. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    // Query parameters may carry a password too (libpq accepts ?password=).
    if (parsed.searchParams.has("password")) {
      parsed.searchParams.set("password", "***");
    }
    return parsed.toString().replace("%2A%2A%2A", "***");
  } catch {
    return redactText(url);
  }
}

/** Masks URL passwords, `password=` keywords and registered secrets in free text. */
export function redactText(text: string): string {
  let out = text.replace(URL_PASSWORD, "$1***$3").replace(
    KEYWORD_PASSWORD,
    "$1***",
  );
  for (const secret of knownSecrets) {
    out = out.split(secret).join("***");
    const encoded = encodeURIComponent(secret);
    if (encoded !== secret) out = out.split(encoded).join("***");
  }
  return out;
}
