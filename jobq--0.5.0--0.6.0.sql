/* jobq--0.5.0--0.6.0.sql: executors allowed per task; lease outcomes that tell nothing of other jobs */

\echo Use "ALTER EXTENSION jobq UPDATE TO '0.6.0'" to load this file. \quit

/*
 * An external task's jobs are claimed only by its registrant and the
 * roles an administrator allowed (jobq.allow_executor()).  Before 0.6.0
 * any role granted jobq.claim() took the jobs of every external task, so
 * a role could feed the administrator's executors: no task is allowed to
 * another role by this update.  Each executor role must be allowed again;
 * a warning names the tasks that need it.
 */
ALTER TABLE jobq.task ADD COLUMN executors regrole[];
COMMENT ON COLUMN jobq.task.executors IS 'roles an administrator allowed to run the jobs of an external task (jobq.allow_executor()), besides its registrant; their members may too';

/*
 * A finished job keeps the digest of its last lease, so that the lease
 * calls say why a lease is lost to its holder only.
 */
ALTER TABLE jobq.job_history ADD COLUMN lease_token uuid;

CREATE FUNCTION jobq.allow_executor(task text, executor regrole, registrant regrole DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_allow_executor';
COMMENT ON FUNCTION jobq.allow_executor(text, regrole, regrole) IS
'allow role executor (and its members) to claim the jobs of external task task; with registrant, only if that role registered the task';

CREATE FUNCTION jobq.disallow_executor(task text, executor regrole)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_disallow_executor';
COMMENT ON FUNCTION jobq.disallow_executor(text, regrole) IS
'no longer allow role executor to claim the jobs of external task task; false if it was not allowed';

-- which executor runs which task is the administrator's to say
REVOKE EXECUTE ON FUNCTION jobq.allow_executor(text, regrole, regrole),
                           jobq.disallow_executor(text, regrole) FROM PUBLIC;

COMMENT ON VIEW jobq.executors IS 'external executors, by role and the name they give jobq.claim(): where they run, the jobs they hold now, and what they did since the server started';

DO $$
DECLARE
    tasks text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (registered by %s)', task, registered_by),
                                 ', ' ORDER BY task)
      INTO tasks
      FROM jobq.task WHERE fn IS NULL;
    IF tasks IS NOT NULL THEN
        RAISE WARNING 'external tasks are now run only by their registrant and the executor roles allowed to run them: %', tasks
            USING HINT = 'Allow each executor role with jobq.allow_executor(task, role).';
    END IF;
END
$$;
