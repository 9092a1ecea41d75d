/*-------------------------------------------------------------------------
 *
 * depend.c
 *		Jobs that depend on other jobs (depends_on).
 *
 * A job enqueued with depends_on waits until every job it names has
 * succeeded: it is stored with run_at infinity, out of every claim's
 * reach, and its own run_at kept in not_before.  When jobs finish (a
 * worker's chunk, jobq.cancel(), a job run by jobq.wait()), the
 * transaction that finishes them settles their waiting dependents before
 * it commits: a dependent whose jobs all succeeded gets its run_at back
 * and is claimable from that commit on; one whose job failed or was
 * cancelled is cancelled, with the reason, and so are its own dependents.
 *
 * Two transactions that finish two jobs of one dependent both lock it
 * (in id order, so that they cannot deadlock) before they look at its
 * jobs, with a new snapshot: the second sees the first's commit.  A
 * dependent enqueued while its last job finishes in another transaction
 * is not seen by that transaction; the workers' periodic sweep settles
 * it (JobqSweepDependents, at most ten seconds later).  The sweep also
 * covers jobs failed by the count of a dead worker's attempt.
 *
 * IDENTIFICATION
 *		src/depend.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "pgstat.h"

#include "jobq.h"

/* the dependents of jobs $1 that wait, locked in id order */
static const char *lock_dependents_sql =
"SELECT id FROM jobq.job"
" WHERE not_before IS NOT NULL AND depends_on OPERATOR(pg_catalog.&&) $1"
" ORDER BY id FOR UPDATE";

/* every waiting job, for the sweep; skips those being settled */
static const char *lock_waiting_sql =
"SELECT id FROM jobq.job j WHERE not_before IS NOT NULL"
"   AND NOT EXISTS (SELECT 1 FROM jobq.job u"
"                    WHERE u.id OPERATOR(pg_catalog.=) ANY (j.depends_on))"
" ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED";

/*
 * Settle locked waiting jobs $1: cancel those with a job that did not
 * succeed (it is in the history, not succeeded), free those with no job
 * left unfinished.  Returns the cancelled ids ('c') and the freed ones
 * ('f', with their priority and run_at).  A job that is in neither
 * table (jobq.retention 0) counts as succeeded.
 */
static const char *settle_sql =
"WITH c AS ("
"  SELECT j.id, j.depends_on FROM jobq.job j"
"   WHERE j.id OPERATOR(pg_catalog.=) ANY ($1) AND j.not_before IS NOT NULL"
"), e AS ("
"  SELECT c.id,"
"         (SELECT pg_catalog.min(h.id) FROM jobq.job_history h"
"           WHERE h.id OPERATOR(pg_catalog.=) ANY (c.depends_on)"
"             AND h.state OPERATOR(pg_catalog.<>) 'succeeded') AS bad,"
"         EXISTS (SELECT 1 FROM jobq.job u"
"                  WHERE u.id OPERATOR(pg_catalog.=) ANY (c.depends_on)) AS waiting"
"    FROM c"
"), gone AS ("
"  DELETE FROM jobq.job j USING e"
"   WHERE j.id OPERATOR(pg_catalog.=) e.id AND e.bad IS NOT NULL"
"  RETURNING j.*, e.bad"
"), kept AS ("
"  INSERT INTO jobq.job_history (id, queue, state, priority, run_at, attempts,"
"         max_attempts, timeout, owner, command, created_at, started_at,"
"         finished_at, result, last_error, last_sqlstate, worker_pid, task,"
"         payload, dedup_key, depends_on)"
"  SELECT id, queue, 'cancelled', priority, not_before, attempts, max_attempts,"
"         timeout, owner, command, created_at, started_at, pg_catalog.now(), NULL,"
"         pg_catalog.format('job %s, which this job depends on, did not succeed', bad),"
"         '57014', NULL, task, payload, dedup_key, depends_on"
"    FROM gone WHERE $2"
"), freed AS ("
"  UPDATE jobq.job j SET run_at = j.not_before, not_before = NULL"
"    FROM e"
"   WHERE j.id OPERATOR(pg_catalog.=) e.id AND e.bad IS NULL AND NOT e.waiting"
"  RETURNING j.id, j.priority, j.run_at"
")"
"SELECT 'c'::pg_catalog.text, id, 0::pg_catalog.int2, NULL::pg_catalog.timestamptz FROM gone"
" UNION ALL "
"SELECT 'f', id, priority, run_at FROM freed";

/*
 * Whether jobq.job can hold waiting jobs: the tables of 0.2.0 (the library
 * updated, the extension not yet) cannot.
 */
static bool
waiting_columns(void)
{
	Oid			nsp = get_namespace_oid("jobq", true);
	Oid			job = OidIsValid(nsp) ? get_relname_relid("job", nsp) : InvalidOid;

	return OidIsValid(job) && get_attnum(job, "not_before") != InvalidAttrNumber;
}

static Datum
id_array(int64 *ids, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
		d[i] = Int64GetDatum(ids[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
}

/*
 * Settle the waiting jobs among locked (n of them); returns how many were
 * cancelled, their ids in *cancelled (palloc'd).
 */
static int
settle(int64 *locked, int n, int64 **cancelled)
{
	Oid			argtypes[2] = {INT8ARRAYOID, BOOLOID};
	Datum		values[2];
	int			nc = 0;
	uint64		i;

	values[0] = id_array(locked, n);
	values[1] = BoolGetDatum(jobq_retention > 0);
	if (JobqExecuteAsOwner(settle_sql, 2, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not settle the dependents of jobq jobs");
	*cancelled = palloc(sizeof(int64) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *kind = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));

		if (kind[0] == 'c')
			(*cancelled)[nc++] = id;
		else
			JobqNoteEnqueue(DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull)),
							DatumGetInt16(SPI_getbinval(tup, desc, 3, &isnull)),
							id);
	}
	SPI_finish();
	if (nc > 0)
		JobqNoteFinishedAtCommit();
	return nc;
}

/* lock the result of a statement's ids; returns how many */
static int
lock_ids(const char *sql, int nargs, Oid *argtypes, Datum *values, int64 **ids)
{
	uint64		i;
	int			n;

	if (JobqExecuteAsOwner(sql, nargs, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the dependents of jobq jobs");
	*ids = palloc(sizeof(int64) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		(*ids)[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 1, &isnull));
	}
	n = (int) SPI_processed;
	SPI_finish();
	return n;
}

/*
 * Jobs ids[0..n-1] finished in the current transaction: settle their
 * waiting dependents, and theirs in turn when they are cancelled.  Needs
 * an active snapshot.  Does nothing until a job has waited since the
 * server started (a flag in shared memory, set by an enqueue that makes a
 * job wait and by a sweep that finds one, and never cleared: clearing it
 * could race with an enqueue that has not committed yet).
 */
void
JobqSettleDependents(int64 *ids, int n)
{
	int			depth;

	if (n == 0 || !JobqDependentsMayExist() || !waiting_columns())
		return;
	for (depth = 0; n > 0 && depth < 1000; depth++)
	{
		Oid			argtypes[1] = {INT8ARRAYOID};
		Datum		values[1];
		int64	   *locked;
		int			nlocked;

		CHECK_FOR_INTERRUPTS();
		values[0] = id_array(ids, n);
		nlocked = lock_ids(lock_dependents_sql, 1, argtypes, values, &locked);
		if (nlocked == 0)
			break;
		/* a new statement, a new snapshot: it sees what committed while we waited */
		n = settle(locked, nlocked, &ids);
	}
}

/*
 * The safety net: settle every waiting job that nobody else is settling,
 * in the current transaction.  Returns the number of waiting jobs seen.
 */
int
JobqSweepDependents(void)
{
	int64	   *locked;
	int64	   *cancelled;
	int			nlocked;
	int			nc;

	nlocked = lock_ids(lock_waiting_sql, 0, NULL, NULL, &locked);
	if (nlocked == 0)
		return 0;
	nc = settle(locked, nlocked, &cancelled);
	JobqSettleDependents(cancelled, nc);
	return nlocked;
}

/*
 * jobq.enqueue(..., depends_on): every job named must exist for the
 * caller; none may have failed or been cancelled.  Returns whether the
 * new job must wait (some are unfinished).
 */
bool
JobqCheckDependencies(ArrayType *deps, int *ndeps)
{
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		values[1];
	bool		wait = false;
	uint64		i;

	if (ARR_NDIM(deps) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("depends_on must be a one-dimensional array")));
	if (array_contains_nulls(deps))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("depends_on must not contain nulls")));
	*ndeps = ArrayGetNItems(ARR_NDIM(deps), ARR_DIMS(deps));
	if (*ndeps > JOBQ_MAX_DEPENDENCIES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a job can depend on at most %d jobs", JOBQ_MAX_DEPENDENCIES)));
	if (*ndeps == 0)
		return false;

	values[0] = PointerGetDatum(deps);
	if (JobqExecuteAsCaller("SELECT d, j.state::pg_catalog.text"
							"  FROM pg_catalog.unnest($1) AS d"
							"  LEFT JOIN jobq.jobs j ON j.id OPERATOR(pg_catalog.=) d"
							" ORDER BY d",
							1, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the jobs of depends_on");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		d = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		Datum		st = SPI_getbinval(tup, desc, 2, &isnull);
		char	   *state = isnull ? NULL : TextDatumGetCString(st);

		if (state == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("job " INT64_FORMAT " in depends_on does not exist", d),
					 errdetail("It may have finished longer ago than jobq.retention, or belong to another role.")));
		if (strcmp(state, "failed") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("job " INT64_FORMAT " in depends_on has failed", d),
					 errdetail("A job that depends on it would never run."),
					 errhint("Retry it with jobq.retry() first.")));
		if (strcmp(state, "cancelled") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("job " INT64_FORMAT " in depends_on was cancelled", d),
					 errdetail("A job that depends on it would never run."),
					 errhint("Retry it with jobq.retry() first.")));
		if (strcmp(state, "succeeded") != 0)
			wait = true;
	}
	SPI_finish();
	return wait;
}

/*
 * A worker's periodic sweep (with retention pruning), in a transaction of
 * its own.
 */
void
JobqSweepDependentsInTransaction(void)
{
	MemoryContext callercxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (JobqLockTables() && waiting_columns())
	{
		int			seen;

		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "jobq: settling jobs that wait for others");
		seen = JobqSweepDependents();
		/* jobs left waiting from before a restart: settle them from now on */
		if (seen == 0 && !JobqDependentsMayExist())
		{
			if (JobqExecuteAsOwner("SELECT 1 FROM jobq.job WHERE not_before IS NOT NULL LIMIT 1",
								   0, NULL, NULL, false) != SPI_OK_SELECT)
				elog(ERROR, "could not look for waiting jobq jobs");
			if (SPI_processed > 0)
				JobqNoteDependents(true);
			SPI_finish();
		}
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(callercxt);
}
