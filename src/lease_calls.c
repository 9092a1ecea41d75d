/*-------------------------------------------------------------------------
 *
 * lease_calls.c
 *		The calls that keep and end a lease: jobq.heartbeat(),
 *		jobq.complete(), jobq.fail() and jobq.release().
 *
 * Each names the job by id and token, locks its row and checks the token
 * under that lock, so exactly one outcome counts per attempt: a call after
 * the lease was lost (it expired and the job was put back or taken again,
 * the job was cancelled, or it already ended) changes nothing and fails
 * with SQLSTATE JQ001, with one answer for every job whose lease the
 * caller does not hold (lease_lost()).  These calls wait for another
 * transaction's lock on the row only briefly (a heartbeat not at all): no
 * session can stall an executor.  The outcomes go through finish.c like
 * the workers'.
 *
 * IDENTIFICATION
 *		src/lease_calls.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "common/md5.h"
#include "executor/executor.h"
#include "utils/fmgroids.h"
#include "utils/resowner.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"
#include "utils/wait_event.h"

#include "jobq.h"
#include "executors.h"
#include "lease.h"
#include "wakeup.h"

PG_FUNCTION_INFO_V1(jobq_heartbeat);
PG_FUNCTION_INFO_V1(jobq_complete);
PG_FUNCTION_INFO_V1(jobq_complete_many);
PG_FUNCTION_INFO_V1(jobq_fail);
PG_FUNCTION_INFO_V1(jobq_release);

/* the longest wait of a lease call for another transaction's row lock */
#define JOBQ_LEASE_LOCK_WAIT_MS	"500"

static SPIPlanPtr heartbeat_plan = NULL;
static SPIPlanPtr release_plan = NULL;

/*
 * A lease's token is a random UUID that only the executor learns: the job
 * keeps its MD5 digest, so that no role that may read jobq.job (a job's
 * owner, pg_monitor) can act in the executor's name.
 */
#define TOKEN_DIGEST(t) \
	"pg_catalog.md5(pg_catalog.uuid_send(" t "))::pg_catalog.uuid"

/*
 * A heartbeat: the lease of job $1 with token $2 lasts until $3 at least.
 * A row locked by another transaction (jobq.cancel() or the expiry, which
 * end the lease, or a role that keeps a cancel of its job uncommitted) is
 * not waited for: the heartbeat is skipped, and "busy" returned.
 */
static const char *heartbeat_sql =
"WITH l AS (SELECT id FROM jobq.job"
"            WHERE id OPERATOR(pg_catalog.=) $1"
"              AND lease_token OPERATOR(pg_catalog.=) " TOKEN_DIGEST("$2")
"              FOR UPDATE SKIP LOCKED),"
"     u AS (UPDATE jobq.job j SET lease_expires_at = GREATEST(j.lease_expires_at, $3)"
"             FROM l WHERE j.id OPERATOR(pg_catalog.=) l.id RETURNING j.executor)"
"SELECT (SELECT pg_catalog.count(*) FROM u) AS extended, (SELECT executor FROM u),"
"       (SELECT pg_catalog.count(*) FROM jobq.job"
"         WHERE id OPERATOR(pg_catalog.=) $1"
"           AND lease_token OPERATOR(pg_catalog.=) " TOKEN_DIGEST("$2") ") AS held";

/* hand job $1, locked, back unrun: its attempt is not counted */
static const char *release_sql =
"UPDATE jobq.job SET attempts = attempts OPERATOR(pg_catalog.-) 1,"
"       lease_token = NULL, lease_expires_at = NULL"
" WHERE id OPERATOR(pg_catalog.=) $1";

/*
 * The lease of job id with token is not held: raises SQLSTATE JQ001, or
 * returns true if the job was cancelled while token held its lease and
 * cancelled_ok.  Needs SPI.
 *
 * Why is said only to the holder of the lease: a job that ended keeps the
 * digest of its last lease in jobq.job_history (0.6.0), so the token
 * proves that the caller held it.  Every other case (no such job, another
 * role's job, a job leased with another token, or not leased, or ended
 * without this token) gets one answer, so that an executor learns nothing
 * of jobs that are not its own.
 */
static bool
lease_lost(int64 id, pg_uuid_t *token, bool cancelled_ok)
{
	pg_uuid_t	digest;
	char		state[NAMEDATALEN];

	state[0] = '\0';
	JobqLeaseTokenDigest(token, &digest);
	if (JobqSchemaGet()->task_executors)
	{
		Oid			argtypes[2] = {INT8OID, UUIDOID};
		Datum		values[2] = {Int64GetDatum(id), UUIDPGetDatum(&digest)};
		bool		isnull;

		if (JobqExecuteAsOwner("SELECT state::pg_catalog.text FROM jobq.job_history"
							   " WHERE id OPERATOR(pg_catalog.=) $1"
							   "   AND lease_token OPERATOR(pg_catalog.=) $2",
							   2, argtypes, values, false) != SPI_OK_SELECT)
			elog(ERROR, "could not look up jobq job " INT64_FORMAT, id);
		/* copied out of SPI's memory, which SPI_finish() frees */
		if (SPI_processed > 0)
			strlcpy(state, TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
															 SPI_tuptable->tupdesc,
															 1, &isnull)),
					sizeof(state));
		SPI_finish();
	}
	if (strcmp(state, "cancelled") == 0)
	{
		if (cancelled_ok)
			return true;
		ereport(ERROR,
				(errcode(ERRCODE_JOBQ_LEASE_LOST),
				 errmsg("lease of job " INT64_FORMAT " is not held", id),
				 errdetail("The job was cancelled."),
				 errhint("The outcome of this attempt does not count; stop its work.")));
	}
	if (strcmp(state, "succeeded") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_JOBQ_LEASE_LOST),
				 errmsg("lease of job " INT64_FORMAT " is not held", id),
				 errdetail("The job has already succeeded."),
				 errhint("The outcome of this attempt does not count.")));
	if (state[0] != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_JOBQ_LEASE_LOST),
				 errmsg("lease of job " INT64_FORMAT " is not held", id),
				 errdetail("The job has already failed."),
				 errhint("The outcome of this attempt does not count.")));
	ereport(ERROR,
			(errcode(ERRCODE_JOBQ_LEASE_LOST),
			 errmsg("lease of job " INT64_FORMAT " is not held", id),
			 errdetail("The lease expired or was ended, or the token is not the lease's."),
			 errhint("The outcome of this attempt does not count; stop its work.")));
	return false;				/* not reached */
}

/* the id and token arguments of the lease calls */
static void
lease_args(FunctionCallInfo fcinfo, const char *what, int64 *id,
		   pg_uuid_t **token)
{
	JobqLeaseRequireExecutors(what);
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job id must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lease token must not be null")));
	*id = PG_GETARG_INT64(0);
	*token = PG_GETARG_UUID_P(1);
}

/*
 * jobq.heartbeat(id bigint, token uuid, extend interval) returns boolean:
 * true if the job was cancelled.
 */
Datum
jobq_heartbeat(PG_FUNCTION_ARGS)
{
	int64		id;
	pg_uuid_t  *token;
	int64		extend_ms;
	Oid			argtypes[3] = {INT8OID, UUIDOID, TIMESTAMPTZOID};
	Datum		values[3];
	bool		cancelled = false;
	char	   *executor = NULL;

	lease_args(fcinfo, "jobq.heartbeat()", &id, &token);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("extend must not be null")));
	extend_ms = JobqLeaseIntervalMs(PG_GETARG_INTERVAL_P(2), "extend", false);

	values[0] = Int64GetDatum(id);
	values[1] = UUIDPGetDatum(token);
	values[2] = TimestampTzGetDatum(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																extend_ms));
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (JobqExecuteKeptAsOwner(JobqLeasePlan(&heartbeat_plan, heartbeat_sql, 3, argtypes),
							   values) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not extend the lease of jobq job " INT64_FORMAT, id);
	else
	{
		bool		isnull;
		bool		extended = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc,
														   1, &isnull)) > 0;
		bool		held = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc,
													   3, &isnull)) > 0;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  2, &isnull);

		/* out of SPI's memory, which SPI_finish() frees */
		if (extended && !isnull)
			executor = MemoryContextStrdup(TopTransactionContext,
										   TextDatumGetCString(d));
		/* held but locked elsewhere: not extended this time, not lost */
		if (!extended && !held)
			cancelled = lease_lost(id, token, true);
	}
	PopActiveSnapshot();
	SPI_finish();
	if (executor != NULL)
		JobqExecutorNote(executor, JOBQ_EXEC_SEEN, 0, NULL, 0);
	PG_RETURN_BOOL(cancelled);
}

/* is the lease of the job in slot (a row of jobq.job) the one of digest? */
static bool
lease_matches(TupleTableSlot *slot, const pg_uuid_t *digest)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, JobqLeaseAttno[JC_LEASE_TOKEN], &isnull);

	return !isnull && memcmp(DatumGetUUIDP(d)->data, digest->data, UUID_LEN) == 0;
}

static const int64 *lock_order_ids;

static int
lock_order_cmp(const void *a, const void *b)
{
	int64		x = lock_order_ids[*(const int *) a];
	int64		y = lock_order_ids[*(const int *) b];

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Lock the rows of the n jobs ids[i] whose leases tokens[i] hold, in the
 * order of their ids.  Another transaction's lock is waited for at most
 * lock_timeout, or JOBQ_LEASE_LOCK_WAIT_MS when that is 0: no session
 * keeps an executor waiting.  For each lease held, jobs[i] gets the job,
 * executors[i] its executor (in TopTransactionContext) and held[i] true.
 * It stops at the first lease not held and returns its index (-1: all
 * held), for the caller to say why (lease_lost()): the jobs after it are
 * not looked at, so a call with tokens that hold nothing takes the same
 * time whatever jobs its ids name.  Needs an active snapshot.
 *
 * The token is checked on the version the snapshot sees, then on the
 * newest version, once locked (a heartbeat may have moved the expiry
 * since, or the expiry put the job back).
 */
static int
lock_leases(int n, const int64 *ids, pg_uuid_t *const *tokens, JobqJob *jobs,
			char **executors, bool *held)
{
	Relation	rel = JobqLeaseOpenJobTable();
	Relation	pkey = JobqLeaseOpenJobIndex(JOBQ_REL_JOB_PKEY);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	int		   *order = palloc(sizeof(int) * Max(n, 1));
	int			nestlevel = NewGUCNestLevel();
	IndexScanDesc scan;
	Snapshot	snapshot;
	CommandId	cid;
	int			k;
	int			lost = -1;

	if (LockTimeout == 0)
		(void) set_config_option("lock_timeout", JOBQ_LEASE_LOCK_WAIT_MS,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	/* what the transaction's earlier commands did is seen (a heartbeat) */
	CommandCounterIncrement();
	PushCopiedSnapshot(GetActiveSnapshot());
	UpdateActiveSnapshotCommandId();
	snapshot = GetActiveSnapshot();
	cid = GetCurrentCommandId(true);

	for (k = 0; k < n; k++)
		order[k] = k;
	lock_order_ids = ids;
	qsort(order, n, sizeof(int), lock_order_cmp);

	for (k = 0; k < n; k++)
		held[k] = false;
	scan = index_beginscan(rel, pkey, snapshot, 1, 0);
	for (k = 0; k < n; k++)
	{
		int			i = order[k];
		ScanKeyData key;
		pg_uuid_t	digest;
		TM_FailureData tmfd;
		ItemPointerData tid;
		bool		isnull;
		Datum		d;

		CHECK_FOR_INTERRUPTS();
		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(ids[i]));
		index_rescan(scan, &key, 1, NULL, 0);
		JobqLeaseTokenDigest(tokens[i], &digest);
		if (!index_getnext_slot(scan, ForwardScanDirection, slot) ||
			!lease_matches(slot, &digest))
		{
			lost = i;
			break;
		}
		tid = slot->tts_tid;
		if (table_tuple_lock(rel, &tid, snapshot, slot, cid, LockTupleExclusive,
							 LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
							 &tmfd) != TM_Ok ||
			!lease_matches(slot, &digest))
		{
			lost = i;
			break;
		}

		slot_getallattrs(slot);
		memset(&jobs[i], 0, sizeof(JobqJob));
		jobs[i].id = ids[i];
		jobs[i].tid = slot->tts_tid;
		jobs[i].priority = DatumGetInt16(JOB_VALUE(slot, JC_PRIORITY));
		jobs[i].run_at = DatumGetTimestampTz(JOB_VALUE(slot, JC_RUN_AT));
		jobs[i].attempts = DatumGetInt32(JOB_VALUE(slot, JC_ATTEMPTS));
		jobs[i].max_attempts = DatumGetInt32(JOB_VALUE(slot, JC_MAX_ATTEMPTS));
		jobs[i].external = true;
		d = slot_getattr(slot, JobqLeaseAttno[JC_EXECUTOR], &isnull);
		executors[i] = isnull ? NULL :
			MemoryContextStrdup(TopTransactionContext, TextDatumGetCString(d));
		held[i] = true;
	}
	index_endscan(scan);
	PopActiveSnapshot();
	AtEOXact_GUC(true, nestlevel);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, NoLock);
	table_close(rel, NoLock);
	pfree(order);
	return lost;
}

/*
 * Lock the row of job id while token holds its lease, into *job; raises
 * the reason if it does not.  *executor gets the lease's executor.  Needs
 * SPI and an active snapshot.
 */
static void
lock_leased(int64 id, pg_uuid_t *token, JobqJob *job, char **executor)
{
	bool		held;

	if (lock_leases(1, &id, &token, job, executor, &held) >= 0)
		(void) lease_lost(id, token, false);
}

/* jobq.complete(id bigint, token uuid, result jsonb) */
Datum
jobq_complete(PG_FUNCTION_ARGS)
{
	int64		id;
	pg_uuid_t  *token;
	JobqJob		job;
	JobqOutcome out;
	char	   *executor;

	lease_args(fcinfo, "jobq.complete()", &id, &token);
	memset(&out, 0, sizeof(out));
	out.kind = JOBQ_SUCCEEDED;
	if (!PG_ARGISNULL(2))
		JobqCheckSize(PG_GETARG_DATUM(2), "job result", jobq_max_result_size,
					  "jobq.max_result_size");
	out.result = PG_ARGISNULL(2) ? (Datum) 0 : PointerGetDatum(PG_GETARG_JSONB_P(2));
	out.finished_at = GetCurrentTimestamp();

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	lock_leased(id, token, &job, &executor);
	job.attempts = -1;			/* as it is */
	SPI_finish();
	JobqFinishJobs(&job, &out, 1);
	PopActiveSnapshot();
	JobqWakeClaimersAtCommit();
	JobqExecutorNote(executor, JOBQ_EXEC_SUCCEEDED, 1, NULL, 0);
	PG_RETURN_VOID();
}

/*
 * jobq.complete(ids bigint[], tokens uuid[], results jsonb[]) returns the
 * number of jobs completed: jobs ids[i] whose leases tokens[i] hold end
 * succeeded with results[i] (results NULL: no results), in one
 * transaction.  All or nothing: one lease not held is an error (JQ001),
 * and none is completed.
 */
Datum
jobq_complete_many(PG_FUNCTION_ARGS)
{
	ArrayType  *id_array;
	ArrayType  *token_array;
	ArrayType  *result_array;
	Datum	   *ids;
	bool	   *id_nulls;
	Datum	   *tokens;
	bool	   *token_nulls;
	Datum	   *results = NULL;
	bool	   *result_nulls = NULL;
	int			n;
	int			ntokens;
	int			nresults = 0;
	JobqJob    *jobs;
	JobqOutcome *outcomes;
	char	  **executors;
	bool	   *locked;
	int64	   *job_ids;
	pg_uuid_t **job_tokens;
	int			lost;
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	JobqLeaseRequireExecutors("jobq.complete()");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job ids and lease tokens must not be null")));
	id_array = PG_GETARG_ARRAYTYPE_P(0);
	token_array = PG_GETARG_ARRAYTYPE_P(1);
	result_array = PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2);
	if (ARR_NDIM(id_array) > 1 || ARR_NDIM(token_array) > 1 ||
		(result_array != NULL && ARR_NDIM(result_array) > 1))
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("job ids, lease tokens and results must be one-dimensional arrays")));
	deconstruct_array(id_array, INT8OID, 8, FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &ids, &id_nulls, &n);
	deconstruct_array(token_array, UUIDOID, UUID_LEN, false,
					  TYPALIGN_CHAR, &tokens, &token_nulls, &ntokens);
	if (result_array != NULL)
		deconstruct_array(result_array, JSONBOID, -1, false,
						  TYPALIGN_INT, &results, &result_nulls, &nresults);
	if (n != ntokens || (results != NULL && nresults != n))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job ids, lease tokens and results must have as many elements"),
				 errdetail("%d job ids, %d lease tokens, %d results.", n, ntokens,
						   results ? nresults : n)));
	if (n > JOBQ_MAX_CLAIM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("at most %d jobs may be completed at once, not %d", JOBQ_MAX_CLAIM, n)));
	for (i = 0; i < n; i++)
	{
		int			k;

		if (id_nulls[i] || token_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("job ids and lease tokens must not contain nulls")));
		if (results != NULL && !result_nulls[i])
			JobqCheckSize(results[i], "job result", jobq_max_result_size,
						  "jobq.max_result_size");
		for (k = 0; k < i; k++)
			if (DatumGetInt64(ids[k]) == DatumGetInt64(ids[i]))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("job " INT64_FORMAT " is given twice", DatumGetInt64(ids[i]))));
	}
	if (n == 0)
		PG_RETURN_INT32(0);

	jobs = palloc0(sizeof(JobqJob) * n);
	outcomes = palloc0(sizeof(JobqOutcome) * n);
	executors = palloc0(sizeof(char *) * n);
	locked = palloc0(sizeof(bool) * n);

	job_ids = palloc(sizeof(int64) * n);
	job_tokens = palloc(sizeof(pg_uuid_t *) * n);
	for (i = 0; i < n; i++)
	{
		job_ids[i] = DatumGetInt64(ids[i]);
		job_tokens[i] = DatumGetUUIDP(tokens[i]);
	}
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	lost = lock_leases(n, job_ids, job_tokens, jobs, executors, locked);
	for (i = 0; i < n; i++)
		jobs[i].attempts = -1;	/* as it is */
	/* all or nothing: the first whose lease is not held says why */
	if (lost >= 0)
		(void) lease_lost(job_ids[lost], job_tokens[lost], false);
	SPI_finish();

	for (i = 0; i < n; i++)
	{
		outcomes[i].kind = JOBQ_SUCCEEDED;
		outcomes[i].finished_at = now;
		if (results != NULL && !result_nulls[i])
			outcomes[i].result = PointerGetDatum(PG_DETOAST_DATUM(results[i]));
	}
	JobqFinishJobs(jobs, outcomes, n);
	PopActiveSnapshot();
	JobqWakeClaimersAtCommit();

	/* counted per run of one executor's jobs */
	for (i = 0; i < n;)
	{
		int			k = i + 1;

		while (k < n && executors[k] && executors[i] && strcmp(executors[k], executors[i]) == 0)
			k++;
		JobqExecutorNote(executors[i], JOBQ_EXEC_SUCCEEDED, k - i, NULL, 0);
		i = k;
	}
	PG_RETURN_INT32(n);
}

/*
 * jobq.fail(id bigint, token uuid, error text, retry_in interval) returns
 * the job's state after it: pending (to be retried) or failed.
 */
Datum
jobq_fail(PG_FUNCTION_ARGS)
{
	int64		id;
	pg_uuid_t  *token;
	JobqJob		job;
	JobqOutcome out;
	char	   *executor;
	int64		retry_ms = -1;
	Oid			state_type;

	lease_args(fcinfo, "jobq.fail()", &id, &token);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("error message must not be null")));
	if (!PG_ARGISNULL(3))
		retry_ms = JobqLeaseIntervalMs(PG_GETARG_INTERVAL_P(3), "retry_in", true);
	memset(&out, 0, sizeof(out));
	out.error = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (strlen(out.error) > (size_t) jobq_max_payload_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("error message of %zu bytes is too large", strlen(out.error)),
				 errdetail("It may be at most jobq.max_payload_size (%d bytes).",
						   jobq_max_payload_size)));
	out.finished_at = GetCurrentTimestamp();

	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	lock_leased(id, token, &job, &executor);
	SPI_finish();
	if (job.attempts >= job.max_attempts)
		out.kind = JOBQ_FAILED;
	else
	{
		out.kind = JOBQ_RETRY;
		out.next_run_at = retry_ms >= 0 ?
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(), retry_ms) :
			JobqNextAttemptTime(job.attempts);
		/* 0 would mean "as it is" */
		if (out.next_run_at == 0)
			out.next_run_at = 1;
	}
	JobqFinishJobs(&job, &out, 1);
	PopActiveSnapshot();
	JobqWakeClaimersAtCommit();
	JobqExecutorNote(executor, JOBQ_EXEC_FAILED, 1, NULL, 0);

	state_type = get_func_rettype(fcinfo->flinfo->fn_oid);
	return DirectFunctionCall2(enum_in,
							   CStringGetDatum(out.kind == JOBQ_FAILED ? "failed" : "pending"),
							   ObjectIdGetDatum(state_type));
}

/*
 * jobq.release(id bigint, token uuid): the executor hands the job back
 * unrun (it stops before it could run it, or stopped it): pending again
 * at once, as if never claimed, the attempt not counted.
 */
Datum
jobq_release(PG_FUNCTION_ARGS)
{
	int64		id;
	pg_uuid_t  *token;
	JobqJob		job;
	char	   *executor;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];

	lease_args(fcinfo, "jobq.release()", &id, &token);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	lock_leased(id, token, &job, &executor);
	values[0] = Int64GetDatum(id);
	if (JobqExecuteKeptAsOwner(JobqLeasePlan(&release_plan, release_sql, 1, argtypes),
							   values) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "could not release jobq job " INT64_FORMAT, id);
	PopActiveSnapshot();
	SPI_finish();
	JobqNoteEnqueue(job.run_at, job.priority, id, true);
	JobqExecutorNote(executor, JOBQ_EXEC_SEEN, 0, NULL, 0);
	PG_RETURN_VOID();
}
