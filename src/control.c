/*-------------------------------------------------------------------------
 *
 * control.c
 *		jobq.cancel(), jobq.retry() and jobq.wait(): acting on one job.
 *
 * Who may act: a caller first looks the job up in jobq.jobs as itself, so
 * row-level security decides whether the job exists for it (as for
 * jobq.status()); cancelling or retrying it takes the privileges of its
 * owner (membership in the owner role, as pg_cancel_backend() asks, or
 * superuser).  The writes then run as the tables' owner (store.c).
 *
 * Cancel.  A pending job that no worker holds is moved to the history as
 * cancelled, in the caller's transaction.  A job that a worker holds (it
 * runs it, or it waits in the worker's claim) is locked by the worker's
 * transaction: the cancel is published in shared memory and the worker
 * running the job is sent SIGUSR2, which cancels the job if it is still
 * the one in hand (a late signal never touches the next job); a worker
 * also checks the requests before it starts a job and when the job ends,
 * so a job that swallowed the cancel is rolled back all the same.  The
 * worker records the job cancelled and commits at once; jobq.cancel()
 * waits for that commit on the row lock, then reads what became of the
 * job: cancelled, or finished first (false), or let go unrun (then it
 * cancels the pending job itself).
 *
 * Wait.  jobq.wait() registers the job it waits for in shared memory and
 * sleeps on a condition variable that a worker broadcasts after the
 * commit of a chunk that finished a job somebody waits for (and that
 * jobq.cancel() broadcasts at its commit).  Every wake-up reads the job's
 * status with a new snapshot, so it needs read committed.  A job that the
 * caller's own transaction enqueued is run in place, once (inplace.c).
 *
 * IDENTIFICATION
 *		src/control.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "depend.h"
#include "requests.h"
#include "slots.h"
#include "wakeup.h"

PG_FUNCTION_INFO_V1(jobq_cancel);
PG_FUNCTION_INFO_V1(jobq_retry);
PG_FUNCTION_INFO_V1(jobq_wait);

typedef enum JobPlace
{
	JOB_UNFINISHED,				/* in jobq.job: pending or running */
	JOB_SUCCEEDED,
	JOB_FAILED,
	JOB_CANCELLED
} JobPlace;

/* what the caller of find_job() means to do with the job */
typedef enum JobAction
{
	JOB_LOOK,					/* only look */
	JOB_CANCEL,
	JOB_RETRY
} JobAction;

/*
 * Where job id is, as the caller sees it (row-level security applies);
 * an error if the caller cannot see it, or may not take the action on it.
 */
static JobPlace
find_job(int64 id, JobAction action, Oid *owner_out)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};
	bool		isnull;
	char	   *state;
	JobPlace	place;
	Oid			owner;

	if (JobqExecuteAsCaller("SELECT state::pg_catalog.text, owner::pg_catalog.oid"
							"  FROM jobq.jobs WHERE id OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not look up jobq job " INT64_FORMAT, id);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("job " INT64_FORMAT " does not exist", id),
				 errdetail("It may have finished longer ago than jobq.retention, or belong to another role.")));
	state = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull));
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 2, &isnull));
	/* read in SPI's memory, which SPI_finish() frees */
	place = strcmp(state, "succeeded") == 0 ? JOB_SUCCEEDED :
		strcmp(state, "failed") == 0 ? JOB_FAILED :
		strcmp(state, "cancelled") == 0 ? JOB_CANCELLED : JOB_UNFINISHED;
	SPI_finish();

	if (action != JOB_LOOK && !has_privs_of_role(GetUserId(), owner))
	{
		const char *rolname = GetUserNameFromId(owner, true);

		if (action == JOB_CANCEL)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to cancel job " INT64_FORMAT, id),
					 errdetail("Only the job's owner, role \"%s\", a member of it or a superuser may cancel it.",
							   rolname ? rolname : "?")));
		else
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to retry job " INT64_FORMAT, id),
					 errdetail("Only the job's owner, role \"%s\", a member of it or a superuser may retry it.",
							   rolname ? rolname : "?")));
	}

	if (owner_out)
		*owner_out = owner;
	return place;
}

/*
 * Lock the job's row in jobq.job, waiting for a worker that holds it if
 * wait; false if the row is not there (finished), or, without wait, is
 * locked.  *job gets the row's id and place.
 */
static bool
lock_job(int64 id, bool wait, JobqJob *job)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};
	bool		found;

	if (JobqExecuteAsOwner(wait ?
						   "SELECT ctid FROM jobq.job WHERE id OPERATOR(pg_catalog.=) $1 FOR UPDATE" :
						   "SELECT ctid FROM jobq.job WHERE id OPERATOR(pg_catalog.=) $1 FOR UPDATE SKIP LOCKED",
						   1, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not lock jobq job " INT64_FORMAT, id);
	found = SPI_processed > 0;
	memset(job, 0, sizeof(*job));
	job->id = id;
	job->attempts = -1;			/* as it is */
	if (found)
	{
		bool		isnull;

		job->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc,
															   1, &isnull));
	}
	SPI_finish();
	return found;
}

/*
 * Cancel the job, which the caller's transaction holds locked in jobq.job:
 * it ends cancelled, and so do the jobs that wait for it.
 */
static void
finish_cancelled(JobqJob *job)
{
	JobqOutcome out;

	memset(&out, 0, sizeof(out));
	out.kind = JOBQ_CANCELLED;
	out.finished_at = GetCurrentTransactionStartTimestamp();
	out.error = JOBQ_CANCELLED_MESSAGE;
	strlcpy(out.sqlstate, unpack_sql_state(ERRCODE_QUERY_CANCELED),
			sizeof(out.sqlstate));
	PushActiveSnapshot(GetTransactionSnapshot());
	JobqFinishJobs(job, &out, 1);
	PopActiveSnapshot();
}

/* what became of a job that left jobq.job: was it cancelled? */
static bool
ended_cancelled(int64 id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};
	bool		cancelled = false;

	if (JobqExecuteAsOwner("SELECT state OPERATOR(pg_catalog.=) 'cancelled' FROM jobq.job_history"
						   " WHERE id OPERATOR(pg_catalog.=) $1",
						   1, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not look up jobq job " INT64_FORMAT, id);
	if (SPI_processed > 0)
	{
		bool		isnull;

		cancelled = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	return cancelled;
}

static void
cancel_request_cleanup(int code, Datum arg)
{
	JobqCancelRequestRemove(DatumGetInt32(arg));
}

/*
 * jobq.cancel(id bigint) returns boolean: true if the job ends cancelled,
 * false if it had finished (or finishes before the cancel reaches it).
 */
Datum
jobq_cancel(PG_FUNCTION_ARGS)
{
	int64		id;
	bool		cancelled;
	int			idx;
	JobqJob		job;

	JobqCheckPreloaded();
	PreventCommandIfReadOnly("jobq.cancel()");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job id must not be null")));
	id = PG_GETARG_INT64(0);

	if (find_job(id, JOB_CANCEL, NULL) != JOB_UNFINISHED)
		PG_RETURN_BOOL(false);

	/* pending, and no worker holds it */
	if (lock_job(id, false, &job))
	{
		finish_cancelled(&job);
		PG_RETURN_BOOL(true);
	}

	/*
	 * A worker holds it (or it just finished).  Ask, interrupt, and wait
	 * for the worker's commit.
	 */
	idx = JobqCancelRequestAdd(id);
	PG_ENSURE_ERROR_CLEANUP(cancel_request_cleanup, Int32GetDatum(idx));
	{
		JobqSignalJobWorker(id);
		if (lock_job(id, true, &job))
		{
			/* let go unrun, or to be retried: it is pending, and ours */
			finish_cancelled(&job);
			cancelled = true;
		}
		else
			cancelled = JobqCancelRequestWasDone(idx, id) || ended_cancelled(id);
	}
	PG_END_ENSURE_ERROR_CLEANUP(cancel_request_cleanup, Int32GetDatum(idx));
	JobqCancelRequestRemove(idx);

	PG_RETURN_BOOL(cancelled);
}

/*
 * Move a failed or cancelled job ($1) back to jobq.job, pending, waiting
 * for its dependencies if $2.  One statement: a concurrent retry of the
 * same job waits for this one's delete and then finds nothing to move.
 * The second form marks the job as counting against its owner's
 * max_pending (a column that tables before 0.4.0 lack).
 */
#define RETRY_SQL(counted_column, counted_value, external) \
	"WITH h AS (DELETE FROM jobq.job_history" \
	"            WHERE id OPERATOR(pg_catalog.=) $1" \
	"              AND state IN ('failed', 'cancelled') RETURNING *)" \
	"INSERT INTO jobq.job (id, queue, priority, run_at, attempts," \
	"       max_attempts, timeout, owner, command, created_at," \
	"       last_error, last_sqlstate, task, payload, dedup_key, depends_on," \
	"       not_before" counted_column ")" \
	"SELECT id, queue, priority," \
	"       CASE WHEN $2 THEN 'infinity' ELSE pg_catalog.now() END, 0," \
	"       max_attempts, timeout, owner, command, created_at," \
	"       last_error, last_sqlstate, task, payload, dedup_key, depends_on," \
	"       CASE WHEN $2 THEN pg_catalog.now() END" counted_value " FROM h" \
	" RETURNING priority, run_at, " external

static const char *retry_sql = RETRY_SQL("", "", "false");
static const char *retry_counted_sql = RETRY_SQL(", counted", ", true", "false");

/*
 * From 0.5.0 on, a job of an external task stays external; $3 says
 * whether it counts against max_pending.
 */
static const char *retry_external_sql =
RETRY_SQL(", counted, external", ", CASE WHEN $3 THEN true END, external",
		  "external");

/*
 * jobq.retry(id bigint) returns boolean: a failed or cancelled job is
 * pending again, due now, with its attempts counted from zero; false for
 * a job that is unfinished or succeeded.
 */
Datum
jobq_retry(PG_FUNCTION_ARGS)
{
	int64		id;
	JobPlace	place;
	Oid			argtypes[3] = {INT8OID, BOOLOID, BOOLOID};
	Datum		values[3];
	bool		wait = false;
	bool		isnull;
	int16		priority;
	TimestampTz run_at;
	Oid			owner = InvalidOid;
	bool		counted;
	bool		external = false;

	JobqCheckPreloaded();
	PreventCommandIfReadOnly("jobq.retry()");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job id must not be null")));
	id = PG_GETARG_INT64(0);

	place = find_job(id, JOB_RETRY, &owner);
	if (place != JOB_FAILED && place != JOB_CANCELLED)
		PG_RETURN_BOOL(false);
	/* the job is unfinished again: its owner's max_pending applies */
	counted = JobqRoleCheckEnqueue(owner);

	/* its dedup key may have been taken by a new job meanwhile */
	values[0] = Int64GetDatum(id);
	if (JobqExecuteAsOwner("SELECT j.id FROM jobq.job_history h, jobq.job j"
						   " WHERE h.id OPERATOR(pg_catalog.=) $1"
						   "   AND j.queue OPERATOR(pg_catalog.=) h.queue"
						   "   AND j.owner OPERATOR(pg_catalog.=) h.owner"
						   "   AND j.dedup_key OPERATOR(pg_catalog.=) h.dedup_key",
						   1, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not look up jobq job " INT64_FORMAT, id);
	if (SPI_processed > 0)
	{
		int64		other = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 1,
														&isnull));

		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("cannot retry job " INT64_FORMAT, id),
				 errdetail("Job " INT64_FORMAT " of the same queue has the same dedup key and is unfinished.",
						   other)));
	}
	SPI_finish();

	/*
	 * The jobs it depends on must all have succeeded, or be unfinished
	 * (then it waits for them again); one that failed is an error.
	 */
	if (JobqExecuteAsOwner("SELECT depends_on FROM jobq.job_history"
						   " WHERE id OPERATOR(pg_catalog.=) $1 AND depends_on IS NOT NULL",
						   1, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not look up jobq job " INT64_FORMAT, id);
	if (SPI_processed > 0)
	{
		/* out of SPI's memory, which SPI_finish() frees */
		ArrayType  *deps = DatumGetArrayTypeP(SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0],
																			  SPI_tuptable->tupdesc, 1,
																			  &isnull),
																false, -1));
		int			ndeps;

		SPI_finish();
		wait = JobqCheckDependencies(deps, &ndeps);
	}
	else
		SPI_finish();

	values[1] = BoolGetDatum(wait);
	values[2] = BoolGetDatum(counted);
	if (JobqExecuteAsOwner(JobqSchemaGet()->executors ? retry_external_sql :
						   counted ? retry_counted_sql : retry_sql,
						   JobqSchemaGet()->executors ? 3 : 2,
						   argtypes, values, false) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not retry jobq job " INT64_FORMAT, id);
	if (SPI_processed == 0)
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}
	priority = DatumGetInt16(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	run_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 2, &isnull));
	external = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 3, &isnull));
	SPI_finish();
	JobqRoleEnqueued(owner);

	/* wake a worker at commit, and keep the claim floors below it */
	if (wait)
		JobqNoteDependents(true);
	else
		JobqNoteEnqueue(run_at, priority, id, external);
	PG_RETURN_BOOL(true);
}

static void
wait_cleanup(int code, Datum arg)
{
	JobqWaitEnd(DatumGetInt32(arg));
}

/*
 * The status of job id as the caller sees it, with a new snapshot, copied
 * out of SPI; *found false if the caller cannot see it.  *mine is set if
 * the caller's own transaction enqueued it (and has not committed).
 */
static Datum
read_status(int64 id, bool *found, bool *finished, bool *mine,
			MemoryContext status_cxt)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};
	Datum		status = (Datum) 0;
	bool		isnull;

	*found = *finished = *mine = false;
	if (JobqExecuteAsCaller("SELECT ROW(j.*)::jobq.job_status,"
							"       j.state::pg_catalog.text OPERATOR(pg_catalog.=)"
							"         ANY ('{succeeded,failed,cancelled}'::pg_catalog.text[]),"
							"       (SELECT x.xmin FROM jobq.job x"
							"         WHERE x.id OPERATOR(pg_catalog.=) $1)"
							"  FROM jobq.jobs j WHERE j.id OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not look up jobq job " INT64_FORMAT, id);
	if (SPI_processed == 0)
	{
		SPI_finish();
		return (Datum) 0;
	}
	*found = true;
	{
		MemoryContext old = MemoryContextSwitchTo(status_cxt);

		status = datumCopy(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull),
						   false, -1);
		MemoryContextSwitchTo(old);
	}
	*finished = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 2, &isnull));
	{
		Datum		xmin = SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 3, &isnull);

		*mine = !isnull &&
			TransactionIdIsCurrentTransactionId(DatumGetTransactionId(xmin));
	}
	SPI_finish();
	return status;
}

/*
 * The loop of jobq.wait(): read the job's status, sleep until a commit
 * that finished a job somebody waits for, again.  Returns the last status
 * read; *found is false if the job disappeared (jobq.retention 0).
 */
static Datum
wait_loop(int64 id, TimestampTz deadline, bool *found)
{
	Datum		status = (Datum) 0;
	bool		finished = false;
	bool		mine = false;
	bool		first = true;
	bool		ran_here = false;
	MemoryContext status_cxt = AllocSetContextCreate(CurrentMemoryContext,
													 "jobq.wait status",
													 ALLOCSET_SMALL_SIZES);

	JobqWaitPrepareToSleep();
	for (;;)
	{
		long		ms = -1;

		/* one status at a time: a long wait wakes often */
		MemoryContextReset(status_cxt);
		status = read_status(id, found, &finished, &mine, status_cxt);
		if (!*found)
		{
			if (first)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("job " INT64_FORMAT " does not exist", id),
						 errdetail("It may have finished longer ago than jobq.retention, or belong to another role.")));
			break;				/* finished and deleted at once */
		}
		if (finished)
			break;
		if (JobqHeldByThisWorker(id))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot wait for job " INT64_FORMAT, id),
					 errdetail("The worker running this job holds that job, which would start only after this job ends.")));
		if (mine)
		{
			/*
			 * No worker can see a job before the transaction that enqueued
			 * it commits, and that is this one: run it here, once, and
			 * report what became of it.
			 */
			if (ran_here)
				break;
			JobqRunInPlace(id);
			ran_here = true;
			continue;
		}
		if (first && IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot wait for a job in a transaction at isolation level %s",
							XactIsoLevel == XACT_SERIALIZABLE ? "SERIALIZABLE" : "REPEATABLE READ"),
					 errdetail("Its snapshot would never see the job finish."),
					 errhint("Wait in a READ COMMITTED transaction.")));
		first = false;

		if (deadline != DT_NOEND)
		{
			TimestampTz now = GetCurrentTimestamp();
			long		secs;
			int			usecs;

			if (now >= deadline)
				break;
			TimestampDifference(now, deadline, &secs, &usecs);
			ms = secs * 1000 + (usecs + 999) / 1000;
		}
		/*
		 * Woken by the commit of a chunk that finished the job; look again
		 * every jobq.poll_interval all the same, for finishes that wake
		 * nobody (COMMIT PREPARED of a cancel, a standby's replay).
		 */
		if (ms < 0 || ms > jobq_poll_interval)
			ms = jobq_poll_interval;
		JobqWaitSleep(ms);
	}
	ConditionVariableCancelSleep();
	return status;
}

/*
 * jobq.wait(id bigint, timeout interval) returns jobq.job_status: once
 * the job has finished, or when timeout (NULL: none) has passed, its
 * status; NULL if the job disappeared meanwhile (jobq.retention 0).
 */
/* the end of jobq.wait()'s timeout argument, DT_NOEND for none */
static TimestampTz
wait_deadline(FunctionCallInfo fcinfo)
{
	Interval   *iv;

	if (PG_ARGISNULL(1))
		return DT_NOEND;
	iv = PG_GETARG_INTERVAL_P(1);
	if (iv->time < 0 || iv->day < 0 || iv->month < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative"),
				 errhint("Pass NULL to wait without a time limit.")));
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(GetCurrentTimestamp()),
												   IntervalPGetDatum(iv)));
}

Datum
jobq_wait(PG_FUNCTION_ARGS)
{
	int64		id;
	Datum		status;
	bool		found = false;
	int			idx;

	JobqCheckPreloaded();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job id must not be null")));
	id = PG_GETARG_INT64(0);
	(void) wait_deadline(fcinfo);	/* a bad timeout fails before we register */

	idx = JobqWaitBegin(id);
	PG_ENSURE_ERROR_CLEANUP(wait_cleanup, Int32GetDatum(idx));
	{
		status = wait_loop(id, wait_deadline(fcinfo), &found);
	}
	PG_END_ENSURE_ERROR_CLEANUP(wait_cleanup, Int32GetDatum(idx));
	JobqWaitEnd(idx);

	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(status);
}
