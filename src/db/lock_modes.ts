/** Table lock modes, shared by the runner and the guardrails; no imports, so lint stays light. */

/** The table lock modes, weakest first, named as in pg_locks.mode. */
export const LOCK_MODES: readonly string[] = [
  "AccessShareLock",
  "RowShareLock",
  "RowExclusiveLock",
  "ShareUpdateExclusiveLock",
  "ShareLock",
  "ShareRowExclusiveLock",
  "ExclusiveLock",
  "AccessExclusiveLock",
];
