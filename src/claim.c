/*-------------------------------------------------------------------------
 *
 * claim.c
 *		The SQL that moves jobs through their life.
 *
 * Storage: jobq.job holds unfinished jobs only, so the partial index that
 * serves the claim stays small; a job that ends is moved to
 * jobq.job_history (or deleted outright when jobq.retention is 0) by the
 * statement that records its outcome.
 *
 * A claim is a row lock and nothing else: SELECT ... FOR UPDATE SKIP
 * LOCKED in the execution transaction, which then runs the jobs and
 * records their outcomes before it commits.  A claim writes no new row
 * version and no index entry, and a claimed job needs no recovery: if its
 * worker dies, the transaction and its locks are gone and the job is
 * pending as it was.  The attempt a dying worker was in is counted from
 * the journal (journal.c, JobqCountCrashedAttempts).  The row locks are
 * also what makes an outcome safe to write without checks: no other
 * transaction can touch a claimed job until its outcome commits.
 *
 * All statements are prepared once per worker and kept (SPI_keepplan); the
 * plan cache re-plans them if the extension is dropped and created again.
 *
 * IDENTIFICATION
 *		src/claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "storage/lmgr.h"
#include "utils/timestamp.h"

#include "jobq.h"

#define JOBQ_PRUNE_BATCH		1000

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr claim_level_plan = NULL;
static SPIPlanPtr claim_blocked_plan = NULL;
static SPIPlanPtr levels_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr retry_plan = NULL;
static SPIPlanPtr find_job_plan = NULL;
static SPIPlanPtr crashed_plan = NULL;
static SPIPlanPtr prune_plan = NULL;

/*
 * What a claim reads of a job.  The %s is for the columns of tasks, which
 * a jobq.job of version 0.2.0 (the library updated, the extension not
 * yet) does not have: see task_columns().
 */
#define CLAIM_COLUMNS \
"SELECT id, owner::pg_catalog.oid, command," \
"       COALESCE((EXTRACT(epoch FROM timeout) * 1000)::pg_catalog.int8, 0)," \
"       attempts + 1, max_attempts, priority, run_at, ctid, queue, %s"

static const char *claim_sql =
CLAIM_COLUMNS
"  FROM jobq.job"
" WHERE state = 'pending' AND run_at <= pg_catalog.now()"
" ORDER BY priority DESC, run_at, id"
" LIMIT $1"
"   FOR UPDATE SKIP LOCKED";

/*
 * The claim while some queues are paused or at their concurrency limit:
 * their jobs are skipped, and no floor is used or raised (a skipped job
 * must stay claimable).
 */
static const char *claim_blocked_sql =
CLAIM_COLUMNS
"  FROM jobq.job"
" WHERE state = 'pending' AND run_at <= pg_catalog.now()"
"   AND queue <> ALL ($2) AND owner::pg_catalog.oid <> ALL ($3)"
" ORDER BY priority DESC, run_at, id"
" LIMIT $1"
"   FOR UPDATE SKIP LOCKED";

/*
 * The claim within one priority level, from that level's floor: the index
 * scan starts at the floor instead of walking the entries of finished
 * jobs at the head of the index, which a long transaction elsewhere can
 * keep from being cleaned up for minutes.
 */
static const char *claim_level_sql =
CLAIM_COLUMNS
"  FROM jobq.job"
" WHERE state = 'pending' AND priority = $1"
"   AND (run_at, id) >= ($2, $3) AND run_at <= pg_catalog.now()"
" ORDER BY priority DESC, run_at, id"
" LIMIT $4"
"   FOR UPDATE SKIP LOCKED";

/* the priority levels of pending jobs, by a skip scan of the claim index */
static const char *levels_sql =
"WITH RECURSIVE l(p) AS ("
"  (SELECT priority FROM jobq.job WHERE state = 'pending'"
"    ORDER BY priority DESC LIMIT 1)"
"  UNION ALL"
"  SELECT (SELECT priority FROM jobq.job WHERE state = 'pending' AND priority < l.p"
"           ORDER BY priority DESC LIMIT 1)"
"    FROM l WHERE l.p IS NOT NULL"
")"
"SELECT p FROM l WHERE p IS NOT NULL LIMIT $1";

/*
 * When an idle worker must look again: the earliest future run_at.  Due
 * jobs are not counted: with nothing claimable, any due job is locked by
 * a worker that runs it (or lets it go and wakes the pool).
 */
static const char *next_due_sql =
"SELECT pg_catalog.min(run_at) FROM jobq.job"
" WHERE state = 'pending' AND run_at > pg_catalog.now()";

/*
 * Jobs to retry stay in jobq.job, with their attempt counted, their next
 * run_at and the error.  (Finished jobs are moved by record_finished.)
 */
static const char *retry_sql =
"UPDATE jobq.job j"
"   SET attempts = o.attempt, run_at = o.next_run_at, started_at = o.started_at,"
"       last_error = o.error, last_sqlstate = o.sqlstate"
"  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),"
"                  pg_catalog.unnest($2::pg_catalog.text[]),"
"                  pg_catalog.unnest($3::pg_catalog.text[]),"
"                  pg_catalog.unnest($4::pg_catalog.timestamptz[]),"
"                  pg_catalog.unnest($5::pg_catalog.timestamptz[]),"
"                  pg_catalog.unnest($6::pg_catalog.int4[]))"
"       AS o(id, error, sqlstate, started_at, next_run_at, attempt)"
" WHERE j.id = o.id";

/* where a job's row is now, after the job itself updated it */
static const char *find_job_sql =
"SELECT ctid FROM jobq.job WHERE id = $1";

/*
 * Attempts of jobs whose worker died in them (journal.c): count the
 * attempt, and fail the job if it has none left.  Only a job still at the
 * attempt before the journaled one is touched, so an attempt is counted
 * once however many workers settle it; a job that is locked is being run
 * again by a live worker already and is left alone.
 */
static const char *crashed_sql =
"WITH o AS ("
"  SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),"
"                           pg_catalog.unnest($2::pg_catalog.int4[]),"
"                           pg_catalog.unnest($3::pg_catalog.timestamptz[]),"
"                           pg_catalog.unnest($4::pg_catalog.int4[]),"
"                           pg_catalog.unnest($7::pg_catalog.text[]),"
"                           pg_catalog.unnest($8::pg_catalog.text[]),"
"                           pg_catalog.unnest($9::pg_catalog.bool[]))"
"         AS o(id, attempt, started_at, pid, error, sqlstate, cancelled)"
"), l AS ("
"  SELECT j.id, j.max_attempts <= o.attempt OR o.cancelled AS last, o.attempt,"
"         o.started_at, o.pid, COALESCE(o.error, $5) AS error, o.sqlstate,"
"         o.cancelled"
"    FROM jobq.job j JOIN o ON j.id = o.id"
"   WHERE j.attempts = o.attempt - 1 AND j.state = 'pending'"
"     FOR UPDATE OF j SKIP LOCKED"
"), done AS ("
"  DELETE FROM jobq.job j USING l"
"   WHERE j.id = l.id AND l.last"
"  RETURNING j.*, l.attempt AS l_attempt, l.started_at AS l_started_at, l.pid AS l_pid,"
"            l.error AS l_error, l.sqlstate AS l_sqlstate, l.cancelled AS l_cancelled"
"), kept AS ("
"  INSERT INTO jobq.job_history (id, queue, state, priority, run_at, attempts,"
"         max_attempts, timeout, owner, command, created_at, started_at,"
"         finished_at, result, last_error, last_sqlstate, worker_pid%s)"
"  SELECT id, queue,"
"         CASE WHEN l_cancelled THEN 'cancelled'::jobq.job_state ELSE 'failed' END,"
"         priority, run_at, l_attempt, max_attempts,"
"         timeout, owner, command, created_at, l_started_at, pg_catalog.now(),"
"         NULL, l_error, l_sqlstate, l_pid%s"
"    FROM done WHERE $6"
"), back AS ("
"  UPDATE jobq.job j"
"     SET attempts = l.attempt, started_at = l.started_at,"
"         last_error = l.error, last_sqlstate = l.sqlstate"
"    FROM l"
"   WHERE j.id = l.id AND NOT l.last"
"  RETURNING 1"
")"
"SELECT (SELECT pg_catalog.count(*) FROM done) + (SELECT pg_catalog.count(*) FROM back)";

/*
 * Pruning starts at the newest finished_at it deleted last time (the prune
 * floor, in shared memory) for the same reason claims start at their
 * floors: the index on finished_at fills with the entries of deleted
 * rows, which a long transaction elsewhere keeps from being cleaned up.  A
 * row committed after the prune passed its finished_at (a chunk commits
 * after its jobs finished) is caught when the floor goes back to the start,
 * every JOBQ_PRUNE_FLOOR_RESET_MS.
 */
static const char *prune_sql =
"WITH d AS ("
"  DELETE FROM jobq.job_history"
"   WHERE id = ANY (ARRAY("
"           SELECT id FROM jobq.job_history"
"            WHERE finished_at >= $3"
"              AND finished_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)"
"            ORDER BY finished_at LIMIT $2))"
"  RETURNING finished_at"
")"
"SELECT pg_catalog.count(*)::pg_catalog.int4, pg_catalog.max(finished_at) FROM d";

#define JOBQ_PRUNE_FLOOR_RESET_MS	(600 * 1000)

static const char *crashed_error =
"the worker running the job exited before the job finished";

/* last_error of a job that ran past its timeout and ignored the cancel */
static const char *timeout_error =
"job ran past its timeout and did not stop within jobq.cancel_grace";

/*
 * Find jobq's two tables.  Syscache lookups only, so it is cheap enough to
 * do before every claim.  Returns false if the extension is not installed
 * in this database.  Needs a transaction.
 */
static bool
jobq_tables(Oid *job, Oid *history)
{
	Oid			nsp = get_namespace_oid("jobq", true);

	if (!OidIsValid(nsp))
		return false;
	*job = get_relname_relid("job", nsp);
	*history = get_relname_relid("job_history", nsp);
	return OidIsValid(*job) && OidIsValid(*history);
}

/*
 * Whether jobq.job has the columns of tasks (version 0.3.0 on), and the
 * kept statements that read them fit.  A library newer than the installed
 * extension runs the SQL jobs the older tables hold until ALTER EXTENSION
 * UPDATE, then its statements are prepared again.
 */
static int	plans_have_tasks = -1;

static bool
task_columns(void)
{
	Oid			job;
	Oid			history;
	bool		tasks;

	tasks = jobq_tables(&job, &history) &&
		get_attnum(job, "task") != InvalidAttrNumber &&
		get_attnum(history, "task") != InvalidAttrNumber &&
		get_attnum(job, "dedup_key") != InvalidAttrNumber &&
		get_attnum(history, "dedup_key") != InvalidAttrNumber &&
		get_attnum(history, "depends_on") != InvalidAttrNumber;
	if ((int) tasks != plans_have_tasks)
	{
		SPIPlanPtr *plans[] = {&claim_plan, &claim_level_plan, &claim_blocked_plan,
		&crashed_plan};
		int			i;

		for (i = 0; i < lengthof(plans); i++)
			if (*plans[i] != NULL)
			{
				SPI_freeplan(*plans[i]);
				*plans[i] = NULL;
			}
		plans_have_tasks = (int) tasks;
	}
	return tasks;
}

static const char *
claim_statement(const char *sql)
{
	return psprintf(sql, task_columns() ? "task, payload" :
					"NULL::pg_catalog.text, NULL::pg_catalog.jsonb");
}

static bool
extension_present(void)
{
	Oid			job;
	Oid			history;

	return jobq_tables(&job, &history);
}

/*
 * Lock jobq's tables for an execution transaction, so that DROP EXTENSION
 * waits for the jobs in flight to commit with their outcomes instead of
 * pulling the tables from under them.  Returns false if the extension is
 * gone (possibly dropped while we waited for the lock).
 */
bool
JobqLockTables(void)
{
	Oid			job;
	Oid			history;

	if (!jobq_tables(&job, &history))
		return false;

	LockRelationOid(job, RowExclusiveLock);
	LockRelationOid(history, RowExclusiveLock);

	return SearchSysCacheExists1(RELOID, ObjectIdGetDatum(job)) &&
		SearchSysCacheExists1(RELOID, ObjectIdGetDatum(history));
}

/*
 * Prepare a statement once and keep it for the life of the worker.
 */
static SPIPlanPtr
keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		/*
		 * A generic plan: these statements run thousands of times a second
		 * and their best plan does not depend on the parameter values, so
		 * planning them per execution (custom plans) would be pure cost.
		 */
		SPIPlanPtr	p = SPI_prepare_cursor(sql, nargs, argtypes,
										   CURSOR_OPT_GENERIC_PLAN);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for jobq statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/*
 * Execute a kept statement.  The planner runs inside, when the plan is
 * first built and whenever an invalidation makes it rebuild, and it must
 * never pick a sequential scan, a sort or a hash join for these: built
 * while the queue is empty (a fresh install, a drained queue), the generic
 * plan of the claim would otherwise be a sequential scan and a sort of the
 * whole table, kept while the queue grows to millions of jobs.  Hence
 * these planner settings, saved and restored around the execution (as
 * for a function's SET clause): the jobs that run next in the same
 * transaction are planned with the session's own.
 */
static int
execute_kept(SPIPlanPtr plan, Datum *values, bool read_only)
{
	int			nestlevel = NewGUCNestLevel();
	int			rc;

	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_hashjoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_mergejoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(plan, values, NULL, read_only, 0);
	AtEOXact_GUC(true, nestlevel);
	return rc;
}

/* append the claimed rows of the last statement to jobs[*njobs..] */
static void
collect_jobs(JobqJob *jobs, int *njobs, MemoryContext cxt)
{
	TupleDesc	desc = SPI_tuptable->tupdesc;
	uint64		i;

	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		JobqJob    *job = &jobs[(*njobs)++];
		bool		isnull;
		Datum		d;

		job->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		job->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		job->timeout_ms = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		job->max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		job->priority = DatumGetInt16(SPI_getbinval(tup, desc, 7, &isnull));
		job->run_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 8, &isnull));
		job->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 9, &isnull));
		d = SPI_getbinval(tup, desc, 10, &isnull);
		job->queue = MemoryContextStrdup(cxt, TextDatumGetCString(d));
		d = SPI_getbinval(tup, desc, 3, &isnull);
		job->command = isnull ? NULL : MemoryContextStrdup(cxt, TextDatumGetCString(d));
		d = SPI_getbinval(tup, desc, 11, &isnull);
		job->task = isnull ? NULL : MemoryContextStrdup(cxt, TextDatumGetCString(d));
		d = SPI_getbinval(tup, desc, 12, &isnull);
		if (isnull)
			job->payload = (Datum) 0;
		else
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			job->payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
			MemoryContextSwitchTo(old);
		}
	}
}

/*
 * Discover the priority levels of pending jobs, if that is due (see
 * JobqFloorsRediscoveryDue), and hand them to JobqFloorsInstall.  The
 * statement runs read-write so that it takes a snapshot of its own, after
 * the rediscovery began: a level enqueued later is added by its enqueue.
 */
static void
discover_levels(void)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1];
	int16		levels[JOBQ_FLOOR_LEVELS + 1];
	uint64		i;

	if (!JobqFloorsRediscoveryDue())
		return;
	values[0] = Int32GetDatum(JOBQ_FLOOR_LEVELS + 1);
	if (execute_kept(keep_plan(&levels_plan, levels_sql, 1, argtypes),
					 values, false) != SPI_OK_SELECT)
		elog(ERROR, "jobq could not list priority levels");
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		levels[i] = DatumGetInt16(SPI_getbinval(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 1, &isnull));
	}
	JobqFloorsInstall(levels, (int) SPI_processed);
}

/*
 * Claim up to limit due jobs for this worker: lock them in the current
 * transaction, which must then run them.  The claimed jobs are copied into
 * cxt, by priority, run_at, id.  With nothing due and next_due not NULL,
 * *next_due is set to the earliest run_at of a pending job (DT_NOEND if
 * none).
 *
 * Claim floors: the claim index is ordered by priority, run_at, id, and a
 * queue is consumed from its head, so the head fills with entries of
 * finished jobs, which the claim would walk every time until vacuum or
 * pruning removes them: with a transaction open elsewhere, for minutes.
 * So shared memory keeps, per priority level, a floor: a key (run_at, id)
 * below which nothing of that level is claimable, and claims scan each
 * level from its floor.  A claim raises its level's floor to the last key
 * it locked: everything before that key was finished, locked by a worker
 * (which lowers the floor again if it lets a job go unrun, and whose
 * death resets the floors), or not visible to the claim's snapshot.  The
 * last case is why every enqueue, when its transaction ends, lowers the
 * floor to its keys and taints the claims of that level in progress: a
 * claim raises the floor no further than the smallest key that appeared
 * while it ran (shmem.c, JobqFloorClaimBegin and JobqFloorClaimEnd).  A
 * worker lowers the floor to the claim-time key of every job it claimed
 * and did not finish (retried or left unrun), after its commit: that also
 * undoes a raise by a claim that saw a retried job's new version (a lock
 * on an updated row returns the newest version) and skipped the rows
 * between its old and new key.  Levels are discovered by a skip scan of
 * the index when unknown, and again every JOBQ_FLOOR_RESCAN_POLLS poll
 * intervals, when every floor goes back to the start as a safety net;
 * with more than JOBQ_FLOOR_LEVELS levels, claims scan from the start.
 */
int
JobqClaimInTransaction(int slot, int limit, MemoryContext cxt,
					   JobqJob **jobs_out, TimestampTz *next_due)
{
	JobqJob    *jobs;
	int			njobs = 0;
	int16		levels[JOBQ_FLOOR_LEVELS];
	int			nlevels;
	int			rc;
	JobqQueueRule *rules;
	int			nrules;
	Datum	   *blocked;
	int			nblocked = 0;
	JobqRoleLimit *role_limits;
	int			nrole_limits;
	Datum	   *blocked_owners;
	int			nblocked_owners = 0;
	int			k;

	*jobs_out = NULL;
	if (next_due)
		*next_due = DT_NOEND;

	jobs = MemoryContextAlloc(cxt, sizeof(JobqJob) * limit);

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "jobq: claiming jobs");

	discover_levels();

	/* queues that are paused, or running as many jobs as they may */
	rules = JobqQueueRules(&nrules);
	blocked = palloc(sizeof(Datum) * Max(1, nrules));
	for (k = 0; k < nrules; k++)
		if (rules[k].paused ||
			(rules[k].concurrency > 0 &&
			 JobqQueueRunning(rules[k].queue) >= rules[k].concurrency))
			blocked[nblocked++] = CStringGetTextDatum(rules[k].queue);
	/* roles running as many jobs as they may */
	role_limits = JobqRoleLimits(&nrole_limits);
	blocked_owners = palloc(sizeof(Datum) * Max(1, nrole_limits));
	for (k = 0; k < nrole_limits; k++)
		if (role_limits[k].max_running >= 0 &&
			JobqOwnerRunning(role_limits[k].role) >= role_limits[k].max_running)
			blocked_owners[nblocked_owners++] = ObjectIdGetDatum(role_limits[k].role);

	if (nblocked > 0 || nblocked_owners > 0)
	{
		Oid			argtypes[3] = {INT4OID, TEXTARRAYOID, OIDARRAYOID};
		Datum		values[3];

		values[0] = Int32GetDatum(limit);
		values[1] = PointerGetDatum(construct_array(blocked, nblocked, TEXTOID,
													-1, false, TYPALIGN_INT));
		values[2] = PointerGetDatum(construct_array(blocked_owners, nblocked_owners,
													OIDOID, sizeof(Oid), true,
													TYPALIGN_INT));
		rc = execute_kept(keep_plan(&claim_blocked_plan,
									claim_statement(claim_blocked_sql), 3, argtypes),
						  values, false);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "jobq claim failed: %s", SPI_result_code_string(rc));
		collect_jobs(jobs, &njobs, cxt);
	}
	else if (JobqFloorsGet(levels, &nlevels))
	{
		Oid			argtypes[4] = {INT2OID, TIMESTAMPTZOID, INT8OID, INT4OID};
		Datum		values[4];
		const char *level_sql = claim_statement(claim_level_sql);
		int			k;

		for (k = 0; k < nlevels && njobs < limit; k++)
		{
			int			before = njobs;
			JobqFloor	floor;
			bool		floored;

			/*
			 * Without a floor (the floors were reset since they were read),
			 * the level is claimed from its start, and raises nothing.
			 */
			floored = JobqFloorClaimBegin(slot, levels[k], &floor);
			if (!floored)
			{
				floor.priority = levels[k];
				floor.run_at = DT_NOBEGIN;
				floor.id = PG_INT64_MIN;
			}
			values[0] = Int16GetDatum(floor.priority);
			values[1] = TimestampTzGetDatum(floor.run_at);
			values[2] = Int64GetDatum(floor.id);
			values[3] = Int32GetDatum(limit - njobs);
			rc = execute_kept(keep_plan(&claim_level_plan, level_sql, 4, argtypes),
							  values, false);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "jobq claim failed: %s", SPI_result_code_string(rc));
			collect_jobs(jobs, &njobs, cxt);
			if (floored)
				JobqFloorClaimEnd(slot, levels[k], njobs > before,
								  njobs > before ? jobs[njobs - 1].run_at : 0,
								  njobs > before ? jobs[njobs - 1].id : 0);
		}
	}
	else
	{
		Oid			argtypes[1] = {INT4OID};
		Datum		values[1];

		values[0] = Int32GetDatum(limit);
		rc = execute_kept(keep_plan(&claim_plan, claim_statement(claim_sql), 1, argtypes),
						  values, false);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "jobq claim failed: %s", SPI_result_code_string(rc));
		collect_jobs(jobs, &njobs, cxt);
	}

	if (njobs == 0 && next_due)
	{
		bool		isnull;
		Datum		d;

		rc = execute_kept(keep_plan(&next_due_plan, next_due_sql, 0, NULL),
						  NULL, true);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "jobq next-due query failed: %s",
				 SPI_result_code_string(rc));
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						  &isnull);
		if (!isnull)
			*next_due = DatumGetTimestampTz(d);
	}

	PopActiveSnapshot();
	SPI_finish();

	*jobs_out = jobs;
	return njobs;
}

static Datum
text_array(char **values, int n, bool *nulls)
{
	Datum	   *d = palloc(sizeof(Datum) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			i;

	for (i = 0; i < n; i++)
		d[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(values[i]);
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, TEXTOID,
											  -1, false, TYPALIGN_INT));
}

static Datum
datum_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs,
											  elemtype, typlen, typbyval,
											  typalign));
}

/*
 * Finished jobs leave jobq.job by their tuple id and enter jobq.job_history
 * in one multi-insert, without SQL (store.c).  A history row is the job's
 * row, column by column by name, with the columns of its end set here.
 */
typedef enum HistorySource
{
	HS_NULL,					/* a column this library does not fill */
	HS_JOB,						/* copied from jobq.job's column */
	HS_STATE,
	HS_ATTEMPTS,
	HS_STARTED_AT,
	HS_FINISHED_AT,
	HS_RESULT,
	HS_LAST_ERROR,
	HS_LAST_SQLSTATE,
	HS_WORKER_PID
} HistorySource;

static JobqTable job_store = {.relname = "job"};
static JobqTable history_store = {.relname = "job_history"};
static uint64 job_map_gen = 0;
static uint64 history_map_job_gen = 0;
static uint64 history_map_history_gen = 0;
static HistorySource *history_source;	/* per history column */
static AttrNumber *history_job_attno;	/* per history column, for HS_JOB */
static AttrNumber job_id_attno;
static Datum state_succeeded;
static Datum state_failed;
static Datum state_cancelled;

static void
build_history_map(void)
{
	TupleDesc	hdesc = history_store.desc;
	int			i;

	/* rebuilt whenever either table's description is */
	if (history_source != NULL)
	{
		pfree(history_source);
		pfree(history_job_attno);
		history_source = NULL;
		history_job_attno = NULL;
	}
	history_source = MemoryContextAlloc(TopMemoryContext,
										sizeof(HistorySource) * hdesc->natts);
	history_job_attno = MemoryContextAllocZero(TopMemoryContext,
											   sizeof(AttrNumber) * hdesc->natts);

	for (i = 0; i < hdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(hdesc, i);
		const char *name = NameStr(att->attname);
		HistorySource src = HS_NULL;

		if (att->attisdropped)
			;
		else if (strcmp(name, "state") == 0)
		{
			(void) JobqTableColumn(&history_store, name, ANYENUMOID, true);
			state_succeeded = DirectFunctionCall2(enum_in, CStringGetDatum("succeeded"),
												  ObjectIdGetDatum(att->atttypid));
			state_failed = DirectFunctionCall2(enum_in, CStringGetDatum("failed"),
											   ObjectIdGetDatum(att->atttypid));
			state_cancelled = DirectFunctionCall2(enum_in, CStringGetDatum("cancelled"),
												  ObjectIdGetDatum(att->atttypid));
			src = HS_STATE;
		}
		else if (strcmp(name, "attempts") == 0)
			src = HS_ATTEMPTS;
		else if (strcmp(name, "started_at") == 0)
			src = HS_STARTED_AT;
		else if (strcmp(name, "finished_at") == 0)
			src = HS_FINISHED_AT;
		else if (strcmp(name, "result") == 0)
			src = HS_RESULT;
		else if (strcmp(name, "last_error") == 0 ||
				 strcmp(name, "last_sqlstate") == 0)
		{
			/* this attempt's error, or else the job's last one */
			src = strcmp(name, "last_error") == 0 ? HS_LAST_ERROR : HS_LAST_SQLSTATE;
			history_job_attno[i] = JobqTableColumn(&job_store, name, TEXTOID, true);
		}
		else if (strcmp(name, "worker_pid") == 0)
			src = HS_WORKER_PID;
		else
		{
			AttrNumber	j = JobqTableColumn(&job_store, name, InvalidOid, false);

			if (j != InvalidAttrNumber &&
				TupleDescAttr(job_store.desc, j - 1)->atttypid == att->atttypid)
			{
				src = HS_JOB;
				history_job_attno[i] = j;
			}
		}
		if (src == HS_NULL && att->attnotnull && !att->attisdropped)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("unrecognized column \"%s\" in relation \"jobq.job_history\"",
							name),
					 errdetail("This version of the jobq library does not know how to fill it."),
						 errhint("Install the jobq library that matches the extension's version.")));
		history_source[i] = src;
	}
	/* the columns filled here must have the types they are given */
	(void) JobqTableColumn(&history_store, "attempts", INT4OID, true);
	(void) JobqTableColumn(&history_store, "started_at", TIMESTAMPTZOID, true);
	(void) JobqTableColumn(&history_store, "finished_at", TIMESTAMPTZOID, true);
	(void) JobqTableColumn(&history_store, "result", JSONBOID, true);
	(void) JobqTableColumn(&history_store, "last_error", TEXTOID, true);
	(void) JobqTableColumn(&history_store, "last_sqlstate", TEXTOID, true);
	(void) JobqTableColumn(&history_store, "worker_pid", INT4OID, true);

	history_map_job_gen = job_store.generation;
	history_map_history_gen = history_store.generation;
}

/*
 * Read a claimed job's row into slot: the version the claim locked, or,
 * if the job itself (run by a superuser) updated that row, its newest
 * version.  False if the job deleted its own row.
 */
static bool spi_connected = false;

static bool
fetch_claimed(Relation jobrel, JobqJob *job, TupleTableSlot *slot)
{
	HeapTuple	tup;
	bool		should_free;

	if (!table_tuple_fetch_row_version(jobrel, &job->tid, SnapshotAny, slot) ||
		DatumGetInt64(slot_getattr(slot, job_id_attno, &(bool) {false})) != job->id)
		elog(ERROR, "jobq job " INT64_FORMAT " is not where its claim found it",
			 job->id);

	/*
	 * Only this transaction can have touched a row it holds locked, and
	 * only by the job's own statements: then xmax is an updater, not just
	 * the claim's lock.  Find the row again by id, as a statement would.
	 */
	tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
	Assert(!should_free);
	if ((tup->t_data->t_infomask & HEAP_XMAX_INVALID) ||
		HEAP_XMAX_IS_LOCKED_ONLY(tup->t_data->t_infomask))
		return true;
	ExecClearTuple(slot);

	if (!spi_connected)
	{
		SPI_connect();
		spi_connected = true;
	}
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		values[1] = {Int64GetDatum(job->id)};
		bool		isnull;

		if (execute_kept(keep_plan(&find_job_plan, find_job_sql, 1, argtypes),
						 values, false) != SPI_OK_SELECT)
			elog(ERROR, "jobq could not look up job " INT64_FORMAT, job->id);
		if (SPI_processed == 0)
			return false;
		job->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc,
															   1, &isnull));
	}
	if (!table_tuple_fetch_row_version(jobrel, &job->tid, SnapshotAny, slot))
		elog(ERROR, "jobq job " INT64_FORMAT " is not where it was found",
			 job->id);
	return true;
}

/*
 * Was a claimed job deleted by a job that ran before it in this chunk
 * (jobq.cancel() of a job the same worker holds)?  Only this transaction
 * can change a row it holds locked.
 */
bool
JobqClaimedJobGone(JobqJob *job)
{
	Relation	rel = JobqTableOpen(&job_store);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(job_store.desc,
													&TTSOpsBufferHeapTuple);
	bool		gone = false;

	PushActiveSnapshot(GetTransactionSnapshot());
	if (!table_tuple_fetch_row_version(rel, &job->tid, SnapshotAny, slot))
		gone = true;
	else
	{
		bool		should_free;
		HeapTuple	tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
		HeapTupleHeader h = tup->t_data;

		gone = !(h->t_infomask & HEAP_XMAX_INVALID) &&
			!HEAP_XMAX_IS_LOCKED_ONLY(h->t_infomask) &&
			ItemPointerEquals(&tup->t_self, &h->t_ctid) &&
			TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetUpdateXid(h));
	}
	ExecDropSingleTupleTableSlot(slot);
	PopActiveSnapshot();
	table_close(rel, NoLock);
	return gone;
}

/*
 * Move the finished jobs among n to the history (or drop them when
 * jobq.retention is 0).  Each is locked by this transaction's claim, so
 * its row is where the claim found it and nobody else can change it.
 */
static void
record_finished(JobqJob *jobs, JobqOutcome *outcomes, int n)
{
	bool		keep = jobq_retention > 0;
	Relation	jobrel = JobqTableOpen(&job_store);
	Relation	histrel = keep ? JobqTableOpen(&history_store) : NULL;
	TupleTableSlot *jslot;
	TupleTableSlot **hslots = NULL;
	CommandId	cid = GetCurrentCommandId(true);
	int			nh = 0;
	int			i;

	spi_connected = false;
	if (job_map_gen != job_store.generation)
	{
		job_id_attno = JobqTableColumn(&job_store, "id", INT8OID, true);
		job_map_gen = job_store.generation;
	}
	if (keep && (history_map_job_gen != job_store.generation ||
				 history_map_history_gen != history_store.generation))
		build_history_map();
	jslot = MakeSingleTupleTableSlot(job_store.desc, &TTSOpsBufferHeapTuple);
	if (keep)
		hslots = palloc(sizeof(TupleTableSlot *) * n);

	/* TOAST reads and deletes need one */
	PushActiveSnapshot(GetTransactionSnapshot());

	for (i = 0; i < n; i++)
	{
		JobqOutcome *o = &outcomes[i];
		TM_FailureData tmfd;
		TM_Result	tmr;

		if (o->kind != JOBQ_SUCCEEDED && o->kind != JOBQ_FAILED &&
			o->kind != JOBQ_CANCELLED)
			continue;

		if (!fetch_claimed(jobrel, &jobs[i], jslot))
			continue;			/* the job deleted its own row */
		cid = GetCurrentCommandId(true);

		if (keep)
		{
			TupleTableSlot *h = JobqTableSlot(&history_store);
			TupleDesc	hdesc = history_store.desc;
			int			c;

			slot_getallattrs(jslot);
			for (c = 0; c < hdesc->natts; c++)
			{
				Datum		v = (Datum) 0;
				bool		isnull = false;

				switch (history_source[c])
				{
					case HS_NULL:
						isnull = true;
						break;
					case HS_LAST_ERROR:
					case HS_LAST_SQLSTATE:
						if (o->error != NULL)
						{
							v = CStringGetTextDatum(history_source[c] == HS_LAST_ERROR ?
													o->error : o->sqlstate);
							break;
						}
						/* FALLTHROUGH */
					case HS_JOB:
						v = jslot->tts_values[history_job_attno[c] - 1];
						isnull = jslot->tts_isnull[history_job_attno[c] - 1];
						break;
					case HS_STATE:
						v = o->kind == JOBQ_SUCCEEDED ? state_succeeded :
							o->kind == JOBQ_CANCELLED ? state_cancelled : state_failed;
						break;
					case HS_ATTEMPTS:
						v = Int32GetDatum(jobs[i].attempts);
						break;
					case HS_STARTED_AT:
						v = TimestampTzGetDatum(o->started_at);
						break;
					case HS_FINISHED_AT:
						v = TimestampTzGetDatum(o->finished_at);
						break;
					case HS_RESULT:
						v = o->result;
						isnull = (o->result == (Datum) 0);
						break;
					case HS_WORKER_PID:
						v = Int32GetDatum(MyProcPid);
						break;
				}
				h->tts_values[c] = v;
				h->tts_isnull[c] = isnull;
			}
			ExecStoreVirtualTuple(h);
			/* copy what points into the job's buffer before it is let go */
			ExecMaterializeSlot(h);
			hslots[nh++] = h;
		}
		ExecClearTuple(jslot);

		tmr = heap_delete(jobrel, &jobs[i].tid, cid, InvalidSnapshot, true,
						  &tmfd, false);
		if (tmr != TM_Ok)
			elog(ERROR, "jobq could not delete finished job " INT64_FORMAT ": %d",
				 jobs[i].id, (int) tmr);
		if (o->kind == JOBQ_CANCELLED)
			JobqCancelRequestDone(jobs[i].id);
	}
	ExecDropSingleTupleTableSlot(jslot);

	if (nh > 0)
		JobqTableInsert(&history_store, histrel, hslots, nh);
	for (i = 0; i < nh; i++)
		ExecDropSingleTupleTableSlot(hslots[i]);
	PopActiveSnapshot();
	if (spi_connected)
		SPI_finish();

	if (histrel != NULL)
		table_close(histrel, NoLock);
	table_close(jobrel, NoLock);
}

/*
 * The jobs that wait for the jobs this chunk finished: freed or cancelled
 * in the same transaction (depend.c).
 */
static void
settle_dependents(JobqJob *jobs, JobqOutcome *outcomes, int n)
{
	int64	   *ids;
	int			k = 0;
	int			i;

	if (!JobqDependentsMayExist())
		return;
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
		if (outcomes[i].kind == JOBQ_SUCCEEDED || outcomes[i].kind == JOBQ_FAILED ||
			outcomes[i].kind == JOBQ_CANCELLED)
			ids[k++] = jobs[i].id;
	if (k > 0)
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		JobqSettleDependents(ids, k);
		PopActiveSnapshot();
	}
	pfree(ids);
}

/*
 * Write the outcomes of n claimed jobs (those released by a shutdown are
 * left as they are).  Runs in the caller's execution transaction; the
 * arrays are built in CurrentMemoryContext.
 */
void
JobqRecordOutcomes(JobqJob *jobs, JobqOutcome *outcomes, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	char	  **errors = palloc(sizeof(char *) * n);
	char	  **sqlstates = palloc(sizeof(char *) * n);
	Datum	   *started = palloc(sizeof(Datum) * n);
	Datum	   *next_run = palloc(sizeof(Datum) * n);
	Datum	   *attempts = palloc(sizeof(Datum) * n);
	bool	   *nonulls = palloc0(sizeof(bool) * n);
	bool	   *error_nulls = palloc(sizeof(bool) * n);
	Oid			argtypes[6] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, INT4ARRAYOID};
	Datum		values[6];
	int			rc;
	int			i;
	int			k = 0;

	record_finished(jobs, outcomes, n);
	settle_dependents(jobs, outcomes, n);

	for (i = 0; i < n; i++)
	{
		JobqOutcome *o = &outcomes[i];

		if (o->kind != JOBQ_RETRY)
			continue;
		ids[k] = Int64GetDatum(jobs[i].id);
		errors[k] = o->error;
		error_nulls[k] = (o->error == NULL);
		sqlstates[k] = o->sqlstate;
		started[k] = TimestampTzGetDatum(o->started_at);
		next_run[k] = TimestampTzGetDatum(o->next_run_at);
		attempts[k] = Int32GetDatum(jobs[i].attempts);
		k++;
	}
	if (k == 0)
		return;

	values[0] = datum_array(ids, nonulls, k, INT8OID);
	values[1] = text_array(errors, k, error_nulls);
	values[2] = text_array(sqlstates, k, error_nulls);
	values[3] = datum_array(started, nonulls, k, TIMESTAMPTZOID);
	values[4] = datum_array(next_run, nonulls, k, TIMESTAMPTZOID);
	values[5] = datum_array(attempts, nonulls, k, INT4OID);

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	rc = execute_kept(keep_plan(&retry_plan, retry_sql, 6, argtypes),
					  values, false);
	if (rc != SPI_OK_UPDATE || SPI_processed != k)
		elog(ERROR, "jobq could not record job retries: %s",
			 SPI_result_code_string(rc));
	PopActiveSnapshot();
	SPI_finish();
}

/*
 * Count the attempts that n jobs were in when their workers died (see
 * crashed_sql), in the current transaction.  Returns how many jobs were
 * changed; 0 if the extension is not installed.
 */
int
JobqCountCrashedAttempts(int n, int64 *ids, int32 *attempts,
						 TimestampTz *started, int32 *pids,
						 JobqEscalation *reasons)
{
	Oid			argtypes[9] = {INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID,
	INT4ARRAYOID, TEXTOID, BOOLOID, TEXTARRAYOID, TEXTARRAYOID, BOOLARRAYOID};
	Datum		values[9];
	Datum	   *d_ids = palloc(sizeof(Datum) * n);
	Datum	   *d_attempts = palloc(sizeof(Datum) * n);
	Datum	   *d_started = palloc(sizeof(Datum) * n);
	Datum	   *d_pids = palloc(sizeof(Datum) * n);
	Datum	   *d_errors = palloc(sizeof(Datum) * n);
	Datum	   *d_sqlstates = palloc(sizeof(Datum) * n);
	Datum	   *d_cancelled = palloc(sizeof(Datum) * n);
	bool	   *nonulls = palloc0(sizeof(bool) * n);
	bool	   *no_reason = palloc0(sizeof(bool) * n);
	bool		isnull;
	int			changed;
	int			i;
	const char *crashed_stmt;
	bool		tasks;

	if (!extension_present())
		return 0;

	for (i = 0; i < n; i++)
	{
		d_ids[i] = Int64GetDatum(ids[i]);
		d_attempts[i] = Int32GetDatum(attempts[i]);
		d_started[i] = TimestampTzGetDatum(started[i]);
		d_pids[i] = Int32GetDatum(pids[i]);
		d_cancelled[i] = BoolGetDatum(reasons[i] == JOBQ_ESCALATE_CANCEL);
		d_errors[i] = d_sqlstates[i] = (Datum) 0;
		no_reason[i] = true;
		if (reasons[i] == JOBQ_ESCALATE_TIMEOUT)
			d_errors[i] = CStringGetTextDatum(timeout_error);
		else if (reasons[i] == JOBQ_ESCALATE_CANCEL)
		{
			d_errors[i] = CStringGetTextDatum(JOBQ_CANCELLED_MESSAGE);
			/* the canceller learns the outcome even with retention 0 */
			JobqCancelRequestDone(ids[i]);
		}
		if (d_errors[i] != (Datum) 0)
		{
			d_sqlstates[i] = CStringGetTextDatum(unpack_sql_state(ERRCODE_QUERY_CANCELED));
			no_reason[i] = false;
		}
	}
	values[0] = datum_array(d_ids, nonulls, n, INT8OID);
	values[1] = datum_array(d_attempts, nonulls, n, INT4OID);
	values[2] = datum_array(d_started, nonulls, n, TIMESTAMPTZOID);
	values[3] = datum_array(d_pids, nonulls, n, INT4OID);
	values[4] = CStringGetTextDatum(crashed_error);
	values[5] = BoolGetDatum(jobq_retention > 0);
	values[6] = datum_array(d_errors, no_reason, n, TEXTOID);
	values[7] = datum_array(d_sqlstates, no_reason, n, TEXTOID);
	values[8] = datum_array(d_cancelled, nonulls, n, BOOLOID);

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "jobq: counting attempts of exited workers");
	/* prepared again if the tables changed: see task_columns() */
	tasks = task_columns();
	crashed_stmt = psprintf(crashed_sql, tasks ? ", task, payload, dedup_key, depends_on" : "",
							tasks ? ", task, payload, dedup_key, depends_on" : "");
	if (execute_kept(keep_plan(&crashed_plan, crashed_stmt, 9, argtypes),
					 values, false) != SPI_OK_SELECT)
		elog(ERROR, "jobq could not count the attempts of exited workers");
	changed = (int) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull));
	PopActiveSnapshot();
	SPI_finish();

	if (changed > 0)
		JobqNoteFinishedAtCommit();
	if (changed > 0)
		ereport(LOG,
				(errmsg_plural("jobq counted the attempt of %d job whose worker exited while running it",
							   "jobq counted the attempts of %d jobs whose workers exited while running them",
							   changed, changed)));
	return changed;
}

/*
 * Delete one batch of finished jobs older than jobq.retention.  Returns
 * JOBQ_PRUNE_BATCH when there may be more to delete.
 */
int
JobqPruneHistory(void)
{
	MemoryContext callercxt = CurrentMemoryContext;
	int			deleted = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (extension_present())
	{
		Oid			argtypes[3] = {FLOAT8OID, INT4OID, TIMESTAMPTZOID};
		Datum		values[3];
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz floor;
		bool		isnull;
		Datum		newest;

		SpinLockAcquire(&JobqShared->mutex);
		if (JobqShared->prune_floor_reset_at <= now)
		{
			JobqShared->prune_floor = DT_NOBEGIN;
			JobqShared->prune_floor_reset_at =
				TimestampTzPlusMilliseconds(now, JOBQ_PRUNE_FLOOR_RESET_MS);
		}
		floor = JobqShared->prune_floor;
		SpinLockRelease(&JobqShared->mutex);

		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "jobq: pruning finished jobs");
		values[0] = Float8GetDatum((double) jobq_retention);
		values[1] = Int32GetDatum(JOBQ_PRUNE_BATCH);
		values[2] = TimestampTzGetDatum(floor);
		if (execute_kept(keep_plan(&prune_plan, prune_sql, 3, argtypes),
						 values, false) != SPI_OK_SELECT)
			elog(ERROR, "jobq could not prune finished jobs");
		deleted = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull));
		newest = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
							   &isnull);
		if (!isnull)
		{
			SpinLockAcquire(&JobqShared->mutex);
			if (JobqShared->prune_floor < DatumGetTimestampTz(newest))
				JobqShared->prune_floor = DatumGetTimestampTz(newest);
			SpinLockRelease(&JobqShared->mutex);
		}
		SPI_finish();
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(callercxt);

	return deleted >= JOBQ_PRUNE_BATCH ? deleted : 0;
}
