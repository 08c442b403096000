import assert from "node:assert/strict";
import { parseConnectionUrl, parseDuration } from "../src/config.ts";
import { redactText, redactUrl } from "../src/redact.ts";

Deno.test("parseDuration() accepts ms, s, min and h", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("5s"), 5000);
  assert.equal(parseDuration("2min"), 120_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.throws(() => parseDuration("soon"), /Invalid duration "soon"/);
});

Deno.test("parseConnectionUrl() reads every part and hides the password in display", () => {
  const info = parseConnectionUrl(
    "postgres://app:s%3Acret@db.internal:6543/shop?sslmode=require",
  );
  assert.equal(info.user, "app");
  assert.equal(info.password, "s:cret");
  assert.equal(info.host, "db.internal");
  assert.equal(info.port, 6543);
  assert.equal(info.database, "shop");
  assert.equal(info.sslmode, "require");
  assert.equal(info.display, "postgres://app:***@db.internal:6543/shop");
});

Deno.test("parseConnectionUrl() rejects a bad URL without echoing its password", () => {
  assert.throws(
    () => parseConnectionUrl("mysql://u:hunter22@h/db"),
    (e: Error) => {
      assert.doesNotMatch(e.message, /hunter22/);
      return true;
    },
  );
});

Deno.test("redactUrl() and redactText() mask passwords", () => {
  assert.equal(
    redactUrl("postgres://u:pw123@h:5432/d"),
    "postgres://u:***@h:5432/d",
  );
  assert.equal(
    redactText("failed for postgresql://u:pw123@h/d now"),
    "failed for postgresql://u:***@h/d now",
  );
  assert.equal(
    redactText("host=h password=pw123 user=u"),
    "host=h password=*** user=u",
  );
});
