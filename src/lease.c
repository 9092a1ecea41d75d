/*-------------------------------------------------------------------------
 *
 * lease.c
 *		External executors: the lease a claim gives, its expiry, and what
 *		the claim and the lease calls share.
 *
 * A job of an external task (task.c) is run by a process outside the
 * server, which cannot hold a transaction open for the length of a job.
 * So its claim (lease_claim.c), unlike a worker's (claim.c), is written
 * and committed: the attempt is counted, and the job gets a lease, a
 * random token and an expiry, in jobq.job (the token's digest only).  The
 * executor keeps the lease and ends it with the lease calls
 * (lease_calls.c).  This file keeps the lease state in shared memory and
 * puts back the jobs of leases that ended, and has what those files share:
 * the columns of jobq.job they use, the tokens, and their arguments.
 *
 * Expiry.  Shared memory holds the earliest expiry that a lease may have
 * (lowered by every claim when it commits, never raised by one).  The
 * idle workers sleep no longer than until then, and the first worker
 * there takes the turn: it puts the jobs of expired leases back (attempt
 * counted; failed when none is left) in a transaction of its own, then
 * reads the earliest expiry left.  A claim that does not wait takes the
 * turn too, when a worker has not; one that may wait, or runs in a
 * transaction block (which may stay open, or be prepared), wakes a worker
 * instead.  A claim that commits a lease that ends before the idle workers
 * would wake up wakes one (wakeup.c).  A heartbeat only moves an expiry
 * later, so it needs neither.
 *
 * IDENTIFICATION
 *		src/lease.c
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

/* at most one expiry sweep per this many milliseconds */
#define JOBQ_SWEEP_INTERVAL_MS	100
/* jobs put back per sweep transaction */
#define JOBQ_SWEEP_BATCH		1000

typedef struct JobqLeaseState
{
	pg_atomic_uint64 next_expiry;	/* earliest expiry a lease may have */
	pg_atomic_uint64 sweep_after;	/* no sweep before then */
	pg_atomic_uint32 leases_seen;	/* a lease was committed since start */
} JobqLeaseState;

static JobqLeaseState *Lease = NULL;

/* the statements of this file, prepared again after the schema changed */
static JobqPlanSet lease_plans;
static SPIPlanPtr expired_plan = NULL;
static SPIPlanPtr min_expiry_plan = NULL;
static SPIPlanPtr leased_plan = NULL;

/* leases that ended before $1, the earliest first */
static const char *expired_sql =
"SELECT ctid, id, priority, run_at, attempts, max_attempts, executor FROM jobq.job"
" WHERE lease_token IS NOT NULL AND lease_expires_at OPERATOR(pg_catalog.<=) $1"
" ORDER BY lease_expires_at"
" LIMIT $2"
"   FOR UPDATE SKIP LOCKED";

static const char *min_expiry_sql =
"SELECT pg_catalog.min(lease_expires_at) FROM jobq.job WHERE lease_token IS NOT NULL";

/* the leases held in queues $1 or of owners $2 */
static const char *leased_sql =
"SELECT queue, owner::pg_catalog.oid FROM jobq.job"
" WHERE lease_token IS NOT NULL"
"   AND (queue OPERATOR(pg_catalog.=) ANY ($1)"
"        OR owner::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($2))";

static const char *expired_error =
"the lease of executor \"%s\" expired before the job finished";

Size
JobqLeaseShmemSize(void)
{
	return MAXALIGN(sizeof(JobqLeaseState));
}

/* at the server's start, and again after a crash; under AddinShmemInitLock */
void
JobqLeaseShmemInit(void)
{
	bool		found;

	Lease = ShmemInitStruct("jobq leases", JobqLeaseShmemSize(), &found);
	if (!found)
	{
		memset(Lease, 0, sizeof(JobqLeaseState));
		/* leases committed before a restart: look at once */
		pg_atomic_init_u64(&Lease->next_expiry, 0);
		pg_atomic_init_u64(&Lease->sweep_after, 0);
		/* leases committed before a restart count until swept */
		pg_atomic_init_u32(&Lease->leases_seen, 1);
	}
}

/* lower the earliest expiry to t (never raise it) */
static void
note_expiry(TimestampTz t)
{
	uint64		cur = pg_atomic_read_u64(&Lease->next_expiry);

	while ((TimestampTz) cur > t)
		if (pg_atomic_compare_exchange_u64(&Lease->next_expiry, &cur, (uint64) t))
			break;
}

/*
 * After the commit of a claim: its leases end by earliest_expiry, which
 * the workers must know of (and, if they sleep longer, one is woken).
 * At the commit, not before: a sweep that began earlier and did not see
 * the claim reads the earliest expiry before this lowers it.
 */
void
JobqLeasesCommitted(TimestampTz earliest_expiry)
{
	if (Lease == NULL)
		return;
	pg_atomic_write_u32(&Lease->leases_seen, 1);
	note_expiry(earliest_expiry);
	JobqWakeWorkerBy(earliest_expiry);
}

/* let the next one who asks (a worker, woken for it) have the turn at once */
void
JobqLeaseSweepSoon(void)
{
	pg_atomic_write_u64(&Lease->sweep_after, 0);
	JobqWakeWorkerBy(GetCurrentTimestamp());
}

/* when an idle worker must look for expired leases next */
TimestampTz
JobqLeaseNextCheck(void)
{
	TimestampTz expiry = (TimestampTz) pg_atomic_read_u64(&Lease->next_expiry);
	TimestampTz after = (TimestampTz) pg_atomic_read_u64(&Lease->sweep_after);

	return expiry == DT_NOEND ? DT_NOEND : Max(expiry, after);
}

/*
 * Is it the caller's turn to expire leases?  (When to ask again:
 * JobqLeaseNextCheck().)
 */
bool
JobqLeaseExpiryTurn(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz expiry = (TimestampTz) pg_atomic_read_u64(&Lease->next_expiry);
	uint64		after = pg_atomic_read_u64(&Lease->sweep_after);

	if (expiry > now || (TimestampTz) after > now)
		return false;
	return pg_atomic_compare_exchange_u64(&Lease->sweep_after, &after,
										  (uint64) TimestampTzPlusMilliseconds(now, JOBQ_SWEEP_INTERVAL_MS));
}

/* the kept statement *plan of the lease files.  Needs SPI. */
SPIPlanPtr
JobqLeasePlan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	return JobqKeepPlanIn(&lease_plans, plan, sql, nargs, argtypes);
}

/*
 * The start of every executor call that writes: jobq preloaded, a
 * read-write transaction, and a schema with external executors (0.5.0).
 */
void
JobqLeaseRequireExecutors(const char *what)
{
	JobqCheckPreloaded();
	PreventCommandIfReadOnly(what);
	if (!JobqSchemaRequire()->executors)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs version 0.5.0 of extension jobq", what),
				 errhint("Update the extension with ALTER EXTENSION jobq UPDATE.")));
}

/* an interval argument as milliseconds: positive, at most a week */
int64
JobqLeaseIntervalMs(Interval *iv, const char *what, bool zero_ok)
{
	int64		ms;

	if (iv->month != 0 || iv->day < 0 || iv->time < 0 ||
		(iv->day == 0 && iv->time == 0 && !zero_ok))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %s", what, zero_ok ? "zero or positive" : "positive"),
				 errdetail("It may be at most 7 days, given in days, hours, minutes and seconds.")));
	ms = (int64) iv->day * 86400000 + iv->time / 1000;
	if (ms == 0 && !zero_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at least 1 millisecond", what)));
	if (ms > JOBQ_MAX_LEASE_MS || iv->day > 7)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at most 7 days", what)));
	return ms;
}

/*
 * Count the leases held in the queues and by the roles that have a limit
 * into tally t (JobqLimitsCountHeld), when leases may exist.  Needs SPI and
 * an active snapshot.
 */
void
JobqLeasesHeld(JobqLimitTally *t)
{
	Datum	   *queues;
	Datum	   *roles;
	Oid			argtypes[2] = {TEXTARRAYOID, OIDARRAYOID};
	Datum		values[2];
	uint64		r;
	int			i;

	if (!JobqSchemaGet()->executors ||
		pg_atomic_read_u32(&Lease->leases_seen) == 0)
		return;
	queues = palloc(sizeof(Datum) * Max(t->nrules, 1));
	roles = palloc(sizeof(Datum) * Max(t->nroles, 1));
	for (i = 0; i < t->nrules; i++)
		queues[i] = CStringGetTextDatum(t->rules[i].queue);
	for (i = 0; i < t->nroles; i++)
		roles[i] = ObjectIdGetDatum(t->roles[i].role);
	values[0] = PointerGetDatum(construct_array(queues, t->nrules, TEXTOID, -1,
												false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(roles, t->nroles, OIDOID,
												sizeof(Oid), true, TYPALIGN_INT));
	if (JobqExecuteKeptAsOwner(JobqLeasePlan(&leased_plan, leased_sql, 2, argtypes),
							   values) != SPI_OK_SELECT)
		elog(ERROR, "could not count the leases of jobq jobs");
	for (r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		char	   *queue = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[r],
															  SPI_tuptable->tupdesc,
															  1, &isnull));
		Oid			owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[r],
														   SPI_tuptable->tupdesc,
														   2, &isnull));

		JobqLimitsTake(t, queue, owner);
	}
}

static const struct
{
	const char *name;
	Oid			type;
}			job_columns[JC_NUM] = {
	[JC_ID] = {"id", INT8OID},
	[JC_QUEUE] = {"queue", TEXTOID},
	[JC_PRIORITY] = {"priority", INT2OID},
	[JC_RUN_AT] = {"run_at", TIMESTAMPTZOID},
	[JC_ATTEMPTS] = {"attempts", INT4OID},
	[JC_MAX_ATTEMPTS] = {"max_attempts", INT4OID},
	[JC_TIMEOUT] = {"timeout", INTERVALOID},
	[JC_OWNER] = {"owner", REGROLEOID},
	[JC_CREATED_AT] = {"created_at", TIMESTAMPTZOID},
	[JC_STARTED_AT] = {"started_at", TIMESTAMPTZOID},
	[JC_TASK] = {"task", TEXTOID},
	[JC_PAYLOAD] = {"payload", JSONBOID},
	[JC_EXTERNAL] = {"external", BOOLOID},
	[JC_EXECUTOR] = {"executor", TEXTOID},
	[JC_LEASE_TOKEN] = {"lease_token", UUIDOID},
	[JC_LEASE_EXPIRES_AT] = {"lease_expires_at", TIMESTAMPTZOID},
};

JobqTable	JobqLeaseJobTable = {.relname = "job"};
AttrNumber	JobqLeaseAttno[JC_NUM];
static uint64 job_columns_generation = 0;

/*
 * Open jobq.job for writing (RowExclusiveLock), its column numbers known.
 */
Relation
JobqLeaseOpenJobTable(void)
{
	Relation	rel = JobqTableOpen(&JobqLeaseJobTable);
	int			i;

	if (job_columns_generation != JobqLeaseJobTable.generation)
	{
		for (i = 0; i < JC_NUM; i++)
			JobqLeaseAttno[i] = JobqTableColumn(&JobqLeaseJobTable, job_columns[i].name,
												job_columns[i].type, true);
		job_columns_generation = JobqLeaseJobTable.generation;
	}
	return rel;
}

/* open an index of jobq.job for a scan (AccessShareLock) */
Relation
JobqLeaseOpenJobIndex(JobqRel which)
{
	Oid			indexid = JobqSchemaGet()->relids[which];

	if (!OidIsValid(indexid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("an index of relation \"jobq.job\" is missing"),
				 errhint("Reinstall the extension with DROP EXTENSION jobq and CREATE EXTENSION jobq.")));
	return index_open(indexid, AccessShareLock);
}

/* the digest of a lease token that jobq.job keeps */
void
JobqLeaseTokenDigest(const pg_uuid_t *token, pg_uuid_t *digest)
{
	const char *errstr = NULL;

	if (!pg_md5_binary(token->data, UUID_LEN, digest->data, &errstr))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute the digest of a lease token: %s", errstr)));
}

/*
 * A new lease token, and the digest that jobq.job keeps of it (the MD5 of
 * its 16 bytes, as TOKEN_DIGEST computes it in SQL).
 */
void
JobqLeaseNewToken(pg_uuid_t *token, pg_uuid_t *digest)
{
	if (!pg_strong_random(token->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random lease token")));
	/* a version 4 (random) UUID, as gen_random_uuid() makes */
	token->data[6] = (token->data[6] & 0x0f) | 0x40;
	token->data[8] = (token->data[8] & 0x3f) | 0x80;
	JobqLeaseTokenDigest(token, digest);
}

/*
 * Put back the jobs of leases that ended by now, up to JOBQ_SWEEP_BATCH of
 * them, in the current transaction; returns how many.  Needs an active
 * snapshot.
 */
int
JobqExpireLeasesNow(void)
{
	Oid			argtypes[2] = {TIMESTAMPTZOID, INT4OID};
	Datum		values[2];
	JobqJob    *jobs = NULL;
	JobqOutcome *outcomes = NULL;
	char	  **executors = NULL;
	int			nexpired;
	uint64		i;
	bool		isnull;
	Datum		d;

	if (!JobqSchemaGet()->executors)
		return 0;
	values[0] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[1] = Int32GetDatum(JOBQ_SWEEP_BATCH);
	SPI_connect();
	if (JobqExecuteKeptAsOwner(JobqLeasePlan(&expired_plan, expired_sql, 2, argtypes),
							   values) != SPI_OK_SELECT)
		elog(ERROR, "could not read the expired leases of jobq jobs");
	nexpired = (int) SPI_processed;
	if (nexpired > 0)
	{
		/* out of SPI's memory, which SPI_finish() frees */
		MemoryContext spicxt = MemoryContextSwitchTo(TopTransactionContext);

		jobs = palloc0(sizeof(JobqJob) * nexpired);
		outcomes = palloc0(sizeof(JobqOutcome) * nexpired);
		executors = palloc0(sizeof(char *) * nexpired);
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			JobqJob    *job = &jobs[i];
			JobqOutcome *o = &outcomes[i];

			job->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 1, &isnull));
			job->id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			job->priority = DatumGetInt16(SPI_getbinval(tup, desc, 3, &isnull));
			job->run_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
			job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
			job->max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
			job->external = true;
			d = SPI_getbinval(tup, desc, 7, &isnull);
			executors[i] = isnull ? NULL : TextDatumGetCString(d);
			/* the attempt was counted by the claim */
			o->kind = job->attempts >= job->max_attempts ? JOBQ_FAILED : JOBQ_RETRY;
			o->finished_at = GetCurrentTimestamp();
			o->error = psprintf(expired_error, executors[i] ? executors[i] : "?");
			strlcpy(o->sqlstate, unpack_sql_state(ERRCODE_JOBQ_LEASE_EXPIRED),
					sizeof(o->sqlstate));
		}
		MemoryContextSwitchTo(spicxt);
	}
	SPI_finish();
	if (nexpired > 0)
	{
		int			k;

		JobqFinishJobs(jobs, outcomes, nexpired);
		JobqWakeClaimersAtCommit();
		for (k = 0; k < nexpired; k++)
			JobqExecutorNote(executors[k], JOBQ_EXEC_EXPIRED, 1, NULL, 0);
	}
	return nexpired;
}

/*
 * Put back the jobs of expired leases, in a transaction of its own, then
 * publish the earliest expiry left.  A worker's duty, when it has the
 * turn (JobqLeaseExpiryTurn).
 */
void
JobqExpireLeases(void)
{
	MemoryContext callercxt = CurrentMemoryContext;
	volatile int nexpired = 0;

	/*
	 * Forget the earliest expiry before reading the leases: a claim that
	 * commits after this read lowers it again at its commit.
	 */
	pg_atomic_write_u64(&Lease->next_expiry, (uint64) DT_NOEND);

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		if (JobqLockTables())
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			pgstat_report_activity(STATE_RUNNING, "jobq: expiring leases");
			nexpired = JobqExpireLeasesNow();
			PopActiveSnapshot();
		}
		CommitTransactionCommand();
		if (nexpired > 0)
			ereport(LOG,
					(errmsg_plural("jobq put back %d job whose external executor's lease expired",
								   "jobq put back %d jobs whose external executors' leases expired",
								   nexpired, nexpired)));

		/* the earliest expiry left, as of now */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		if (JobqLockTables() && JobqSchemaGet()->executors)
		{
			bool		isnull;
			Datum		d;

			PushActiveSnapshot(GetTransactionSnapshot());
			SPI_connect();
			if (JobqExecuteKeptAsOwner(JobqLeasePlan(&min_expiry_plan, min_expiry_sql, 0, NULL),
									   NULL) != SPI_OK_SELECT)
				elog(ERROR, "could not read the leases of jobq jobs");
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			if (!isnull)
				note_expiry(DatumGetTimestampTz(d));
			SPI_finish();
			PopActiveSnapshot();
		}
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		/* look again soon */
		note_expiry(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000));
		PG_RE_THROW();
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(callercxt);
}
