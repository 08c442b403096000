/** `wait [--timeout D]`: waits until the server accepts connections (CI service containers). */

import type { CommandContext } from "./context.ts";
import { humanDuration, parseDuration, resolveConnection } from "../config.ts";
import { connect } from "../db/connect.ts";
import { sleep } from "../db/lock.ts";
import { ConnectionError } from "../errors.ts";

/** Runs `wait`. */
export async function run(
  ctx: CommandContext,
  options: Record<string, unknown>,
): Promise<number> {
  const timeoutMs = parseDuration(
    String(options.timeout ?? "60s"),
    "--timeout",
  );
  const info = resolveConnection(ctx.config.databaseUrl);
  const started = Date.now();
  let last: unknown;
  let told = false;
  while (Date.now() - started <= timeoutMs) {
    try {
      const sql = await connect(info, {
        connectTimeoutSeconds: Math.max(1, Math.ceil(timeoutMs / 1000)),
      });
      await sql.end({ timeout: 1 });
      const waitedMs = Date.now() - started;
      ctx.reporter.result(
        { ready: true, waitedMs },
        () =>
          `${info.display} accepts connections (waited ${
            humanDuration(waitedMs)
          })`,
      );
      return 0;
    } catch (error) {
      last = error;
      // A wrong password or missing database will not fix itself: stop now.
      if (
        error instanceof ConnectionError &&
        /authentication|does not exist|no access/.test(error.message)
      ) throw error;
      if (!told) {
        told = true;
        ctx.reporter.info(`Waiting for ${info.display} to accept connections`);
      }
      await sleep(250, ctx.signal);
    }
  }
  const cause = last instanceof Error ? last.message : String(last);
  throw new ConnectionError(
    `Gave up after ${humanDuration(timeoutMs)}: ${cause}`,
    { host: info.host, port: info.port, cause },
  );
}
