/*-------------------------------------------------------------------------
 *
 * claim.c
 *		The SQL that moves jobs through their life.
 *
 * Storage: jobq.job holds unfinished jobs only (pending and running), so
 * the partial index that serves the claim stays small; a job that ends is
 * moved to jobq.job_history (or deleted outright when jobq.retention is 0)
 * by the same statement that records its outcome.
 *
 * All statements are prepared once per worker and kept (SPI_keepplan); the
 * plan cache re-plans them if the extension is dropped and created again.
 * Every statement that changes a claimed job checks that the job is still
 * running under the expected pid, so a job is never finished twice, even
 * if two workers recover the same orphan at once.
 *
 * Transactions: JobqClaim, JobqRecoverOrphans, JobqReleaseOwnJobs and
 * JobqPruneHistory each run one transaction of their own;
 * JobqRecordOutcomes runs inside the caller's execution transaction, so
 * that outcomes commit together with the jobs' effects, and so may
 * JobqClaimInTransaction: a worker claims its next batch in the
 * transaction that finishes the current one, one commit (one WAL flush)
 * for both.
 *
 * IDENTIFICATION
 *		src/claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "storage/lmgr.h"
#include "utils/timestamp.h"

#include "jobq.h"

#define JOBQ_PRUNE_BATCH		1000

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr outcome_plan = NULL;
static SPIPlanPtr running_plan = NULL;
static SPIPlanPtr recover_plan = NULL;
static SPIPlanPtr prune_plan = NULL;

static const char *claim_sql =
"UPDATE jobq.job j"
"   SET state = 'running', attempts = j.attempts + 1,"
"       started_at = pg_catalog.now(), worker_pid = $1"
" WHERE j.id = ANY (ARRAY("
"         SELECT id FROM jobq.job"
"          WHERE state = 'pending' AND run_at <= pg_catalog.now()"
"          ORDER BY priority DESC, run_at, id"
"          LIMIT $2"
"            FOR UPDATE SKIP LOCKED))"
" RETURNING j.id, j.owner::pg_catalog.oid, j.command,"
"           COALESCE((EXTRACT(epoch FROM j.timeout) * 1000)::pg_catalog.int8, 0),"
"           j.attempts, j.max_attempts, j.priority, j.run_at";

static const char *next_due_sql =
"SELECT pg_catalog.min(run_at) FROM jobq.job WHERE state = 'pending'";

/*
 * One statement records the outcomes of a chunk.  Finished jobs leave the
 * hot table (and enter the history when $10); retried and released jobs
 * go back to pending.
 */
static const char *outcome_sql =
"WITH o AS ("
"  SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),"
"                           pg_catalog.unnest($2::pg_catalog.text[]),"
"                           pg_catalog.unnest($3::pg_catalog.jsonb[]),"
"                           pg_catalog.unnest($4::pg_catalog.text[]),"
"                           pg_catalog.unnest($5::pg_catalog.text[]),"
"                           pg_catalog.unnest($6::pg_catalog.timestamptz[]),"
"                           pg_catalog.unnest($7::pg_catalog.timestamptz[]),"
"                           pg_catalog.unnest($8::pg_catalog.timestamptz[]))"
"         AS o(id, kind, result, error, sqlstate, started_at, finished_at, next_run_at)"
"), done AS ("
"  DELETE FROM jobq.job j USING o"
"   WHERE j.id = o.id AND j.worker_pid = $9 AND j.state = 'running'"
"     AND o.kind IN ('succeeded', 'failed')"
"  RETURNING j.id, j.queue, o.kind, j.priority, j.run_at, j.attempts,"
"            j.max_attempts, j.timeout, j.owner, j.command, j.created_at,"
"            o.started_at, o.finished_at, o.result,"
"            COALESCE(o.error, j.last_error) AS last_error,"
"            CASE WHEN o.error IS NULL THEN j.last_sqlstate ELSE o.sqlstate END AS last_sqlstate"
"), kept AS ("
"  INSERT INTO jobq.job_history (id, queue, state, priority, run_at, attempts,"
"         max_attempts, timeout, owner, command, created_at, started_at,"
"         finished_at, result, last_error, last_sqlstate, worker_pid)"
"  SELECT id, queue, kind::jobq.job_state, priority, run_at, attempts,"
"         max_attempts, timeout, owner, command, created_at, started_at,"
"         finished_at, result, last_error, last_sqlstate, $9"
"    FROM done WHERE $10"
")"
"UPDATE jobq.job j"
"   SET state = 'pending', worker_pid = NULL,"
"       attempts = CASE WHEN o.kind = 'release' THEN j.attempts - 1 ELSE j.attempts END,"
"       run_at = CASE WHEN o.kind = 'retry' THEN o.next_run_at ELSE j.run_at END,"
"       started_at = CASE WHEN o.kind = 'retry' THEN o.started_at ELSE NULL END,"
"       last_error = CASE WHEN o.kind = 'retry' THEN o.error ELSE j.last_error END,"
"       last_sqlstate = CASE WHEN o.kind = 'retry' THEN o.sqlstate ELSE j.last_sqlstate END"
"  FROM o"
" WHERE j.id = o.id AND j.worker_pid = $9 AND j.state = 'running'"
"   AND o.kind IN ('retry', 'release')";

static const char *running_sql =
"SELECT id, worker_pid, started_at FROM jobq.job WHERE state = 'running'";

/*
 * Recovery of jobs whose worker is gone: the attempt stays counted; a job
 * without attempts left fails, so a job that kills its worker (or the
 * whole server) does not run forever.
 */
static const char *recover_sql =
"WITH o AS ("
"  SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),"
"                           pg_catalog.unnest($2::pg_catalog.int4[])) AS o(id, pid)"
"), done AS ("
"  DELETE FROM jobq.job j USING o"
"   WHERE j.id = o.id AND j.worker_pid = o.pid"
"     AND j.state = 'running' AND j.attempts >= j.max_attempts"
"  RETURNING j.*"
"), kept AS ("
"  INSERT INTO jobq.job_history (id, queue, state, priority, run_at, attempts,"
"         max_attempts, timeout, owner, command, created_at, started_at,"
"         finished_at, result, last_error, last_sqlstate, worker_pid)"
"  SELECT id, queue, 'failed', priority, run_at, attempts, max_attempts,"
"         timeout, owner, command, created_at, started_at, pg_catalog.now(),"
"         NULL, $3, NULL, worker_pid"
"    FROM done WHERE $4"
"), back AS ("
"  UPDATE jobq.job j"
"     SET state = 'pending', worker_pid = NULL, last_error = $3, last_sqlstate = NULL"
"    FROM o"
"   WHERE j.id = o.id AND j.worker_pid = o.pid"
"     AND j.state = 'running' AND j.attempts < j.max_attempts"
"  RETURNING 1"
")"
"SELECT (SELECT pg_catalog.count(*) FROM done) + (SELECT pg_catalog.count(*) FROM back)";

static const char *prune_sql =
"DELETE FROM jobq.job_history"
" WHERE id = ANY (ARRAY("
"         SELECT id FROM jobq.job_history"
"          WHERE finished_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)"
"          ORDER BY finished_at LIMIT $2))";

static const char *orphan_error =
"the worker running the job exited before the job finished";

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

static int
compare_jobs(const void *a, const void *b)
{
	const JobqJob *ja = (const JobqJob *) a;
	const JobqJob *jb = (const JobqJob *) b;

	if (ja->priority != jb->priority)
		return ja->priority > jb->priority ? -1 : 1;
	if (ja->run_at != jb->run_at)
		return ja->run_at < jb->run_at ? -1 : 1;
	if (ja->id != jb->id)
		return ja->id < jb->id ? -1 : 1;
	return 0;
}

/*
 * Claim up to limit due jobs for this worker, inside the current
 * transaction.  The claimed jobs are copied into cxt and sorted by
 * priority, run_at, id.  With nothing due and next_due not NULL, *next_due
 * is set to the earliest run_at of a pending job (DT_NOEND if none).
 */
int
JobqClaimInTransaction(int limit, MemoryContext cxt, JobqJob **jobs_out,
					   TimestampTz *next_due)
{
	JobqJob    *jobs = NULL;
	int			njobs = 0;
	uint64		i;
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		values[2];
	int			rc;

	*jobs_out = NULL;
	if (next_due)
		*next_due = DT_NOEND;

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "jobq: claiming jobs");

	values[0] = Int32GetDatum(MyProcPid);
	values[1] = Int32GetDatum(limit);
	rc = SPI_execute_plan(keep_plan(&claim_plan, claim_sql, 2, argtypes),
						  values, NULL, false, 0);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "jobq claim failed: %s", SPI_result_code_string(rc));

	if (SPI_processed > 0)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;

		njobs = (int) SPI_processed;
		jobs = MemoryContextAlloc(cxt, sizeof(JobqJob) * njobs);
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			JobqJob    *job = &jobs[i];
			bool		isnull;
			Datum		d;

			job->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			job->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
			d = SPI_getbinval(tup, desc, 3, &isnull);
			job->command = MemoryContextStrdup(cxt, TextDatumGetCString(d));
			job->timeout_ms = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
			job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
			job->max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
			job->priority = DatumGetInt16(SPI_getbinval(tup, desc, 7, &isnull));
			job->run_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 8, &isnull));
		}
		qsort(jobs, njobs, sizeof(JobqJob), compare_jobs);
	}
	else if (next_due)
	{
		bool		isnull;
		Datum		d;

		rc = SPI_execute_plan(keep_plan(&next_due_plan, next_due_sql, 0, NULL),
							  NULL, NULL, true, 1);
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

/*
 * Claim up to limit due jobs in a transaction of their own, which commits
 * the attempts before anything runs.  Jobs go to CurrentMemoryContext.
 * Returns -1 if the extension is not installed.
 */
int
JobqClaim(int limit, JobqJob **jobs_out, TimestampTz *next_due)
{
	MemoryContext callercxt = CurrentMemoryContext;
	int			njobs;

	*jobs_out = NULL;
	*next_due = DT_NOEND;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!extension_present())
	{
		CommitTransactionCommand();
		MemoryContextSwitchTo(callercxt);
		return -1;
	}
	njobs = JobqClaimInTransaction(limit, callercxt, jobs_out, next_due);
	CommitTransactionCommand();
	MemoryContextSwitchTo(callercxt);
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
 * Write the outcomes of n claimed jobs.  Runs in the caller's execution
 * transaction; the arrays are built in CurrentMemoryContext.
 */
void
JobqRecordOutcomes(JobqJob *jobs, JobqOutcome *outcomes, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	char	  **kinds = palloc(sizeof(char *) * n);
	Datum	   *results = palloc(sizeof(Datum) * n);
	char	  **errors = palloc(sizeof(char *) * n);
	char	  **sqlstates = palloc(sizeof(char *) * n);
	Datum	   *started = palloc(sizeof(Datum) * n);
	Datum	   *finished = palloc(sizeof(Datum) * n);
	Datum	   *next_run = palloc(sizeof(Datum) * n);
	bool	   *nonulls = palloc0(sizeof(bool) * n);
	bool	   *result_nulls = palloc(sizeof(bool) * n);
	bool	   *error_nulls = palloc(sizeof(bool) * n);
	bool	   *time_nulls = palloc(sizeof(bool) * n);
	bool	   *next_nulls = palloc(sizeof(bool) * n);
	Oid			argtypes[10] = {INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID,
		TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID,
	TIMESTAMPTZARRAYOID, INT4OID, BOOLOID};
	Datum		values[10];
	int			rc;
	int			i;

	if (n == 0)
		return;

	for (i = 0; i < n; i++)
	{
		JobqOutcome *o = &outcomes[i];

		ids[i] = Int64GetDatum(jobs[i].id);
		switch (o->kind)
		{
			case JOBQ_SUCCEEDED:
				kinds[i] = "succeeded";
				break;
			case JOBQ_RETRY:
				kinds[i] = "retry";
				break;
			case JOBQ_FAILED:
				kinds[i] = "failed";
				break;
			case JOBQ_RELEASE:
				kinds[i] = "release";
				break;
		}
		results[i] = o->result;
		result_nulls[i] = (o->result == (Datum) 0);
		errors[i] = o->error;
		error_nulls[i] = (o->error == NULL);
		sqlstates[i] = o->sqlstate;
		started[i] = TimestampTzGetDatum(o->started_at);
		finished[i] = TimestampTzGetDatum(o->finished_at);
		time_nulls[i] = (o->kind == JOBQ_RELEASE);
		next_run[i] = TimestampTzGetDatum(o->next_run_at);
		next_nulls[i] = (o->kind != JOBQ_RETRY);
	}

	values[0] = datum_array(ids, nonulls, n, INT8OID);
	values[1] = text_array(kinds, n, nonulls);
	values[2] = datum_array(results, result_nulls, n, JSONBOID);
	values[3] = text_array(errors, n, error_nulls);
	values[4] = text_array(sqlstates, n, error_nulls);
	values[5] = datum_array(started, time_nulls, n, TIMESTAMPTZOID);
	values[6] = datum_array(finished, time_nulls, n, TIMESTAMPTZOID);
	values[7] = datum_array(next_run, next_nulls, n, TIMESTAMPTZOID);
	values[8] = Int32GetDatum(MyProcPid);
	values[9] = BoolGetDatum(jobq_retention > 0);

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	rc = SPI_execute_plan(keep_plan(&outcome_plan, outcome_sql, 10, argtypes),
						  values, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "jobq could not record job outcomes: %s",
			 SPI_result_code_string(rc));
	PopActiveSnapshot();
	SPI_finish();
}

/*
 * Send running jobs back to pending (or to failed, without attempts left).
 * With own = false, the jobs of workers that are gone; with own = true,
 * the jobs this worker holds.  One transaction.  Returns the number of
 * jobs recovered.
 */
static int
recover_jobs(bool own)
{
	MemoryContext callercxt = CurrentMemoryContext;
	Datum	   *ids = NULL;
	Datum	   *pids = NULL;
	int			n = 0;
	uint64		i;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!extension_present())
	{
		CommitTransactionCommand();
		MemoryContextSwitchTo(callercxt);
		return 0;
	}

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "jobq: recovering orphaned jobs");

	if (SPI_execute_plan(keep_plan(&running_plan, running_sql, 0, NULL),
						 NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "jobq could not list running jobs");

	/*
	 * The snapshot of that query was taken before we look at the slots: a
	 * job it shows as running was claimed by a worker whose slot was taken
	 * before the claim committed.  If that slot is free now, the claimer
	 * has exited.
	 */
	if (SPI_processed > 0)
	{
		ids = palloc(sizeof(Datum) * SPI_processed);
		pids = palloc(sizeof(Datum) * SPI_processed);
	}
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		int32		pid = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		TimestampTz claimed = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
		bool		orphan;

		if (own)
			orphan = (pid == MyProcPid);
		else
			orphan = !JobqPidIsLiveWorker(pid, claimed);
		if (orphan)
		{
			ids[n] = Int64GetDatum(id);
			pids[n] = Int32GetDatum(pid);
			n++;
		}
	}

	if (n > 0)
	{
		Oid			argtypes[4] = {INT8ARRAYOID, INT4ARRAYOID, TEXTOID, BOOLOID};
		Datum		values[4];
		bool	   *nonulls = palloc0(sizeof(bool) * n);
		bool		isnull;

		values[0] = datum_array(ids, nonulls, n, INT8OID);
		values[1] = datum_array(pids, nonulls, n, INT4OID);
		values[2] = CStringGetTextDatum(orphan_error);
		values[3] = BoolGetDatum(jobq_retention > 0);
		if (SPI_execute_plan(keep_plan(&recover_plan, recover_sql, 4, argtypes),
							 values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "jobq could not recover orphaned jobs");
		n = (int) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull));
		if (!own && n > 0)
			ereport(LOG,
					(errmsg_plural("jobq recovered %d job left running by an exited worker",
								   "jobq recovered %d jobs left running by exited workers",
								   n, n)));
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(callercxt);

	/* recovered jobs are due: make sure someone runs them */
	if (n > 0)
		JobqWakeWorkers(n);
	return n;
}

int
JobqRecoverOrphans(void)
{
	return recover_jobs(false);
}

void
JobqReleaseOwnJobs(void)
{
	(void) recover_jobs(true);
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
		Oid			argtypes[2] = {FLOAT8OID, INT4OID};
		Datum		values[2];

		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "jobq: pruning finished jobs");
		values[0] = Float8GetDatum((double) jobq_retention);
		values[1] = Int32GetDatum(JOBQ_PRUNE_BATCH);
		if (SPI_execute_plan(keep_plan(&prune_plan, prune_sql, 2, argtypes),
							 values, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "jobq could not prune finished jobs");
		deleted = (int) SPI_processed;
		SPI_finish();
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(callercxt);

	return deleted >= JOBQ_PRUNE_BATCH ? deleted : 0;
}
