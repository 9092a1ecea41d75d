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
 * jobs, with a new snapshot: the second sees the first's commit.
 *
 * A dependent enqueued while its last job finishes in another transaction
 * is the one case that neither side sees: the enqueue's check ran before
 * the finish committed (the job is unfinished: wait), and the finish's
 * settlement ran before the enqueue committed (no dependent yet).  Nothing
 * else would make it due before the workers' periodic sweep, up to ten
 * seconds later, or later still if the workers sleep for jobq.poll_interval.
 * Neither transaction can wait for the other (a job may run for hours, an
 * enqueue's transaction stay open as long as its session likes), so both
 * sides look once more right after they committed, through counters in
 * shared memory, one pair per bucket of job ids:
 *	- a transaction that finishes a job reads its bucket's "waiting" count
 *	  before its settlement's snapshot; after its commit it bumps the
 *	  bucket's "finished" count and reads "waiting" again;
 *	- an enqueue that makes a job wait reads the "finished" counts of the
 *	  buckets of its jobs before its check's snapshot; after its commit it
 *	  bumps their "waiting" counts and reads "finished" again.
 * The bumps and the reads after them are full memory barriers: of two
 * such transactions that missed each other, at least one sees the other's
 * bump, and then both commits precede its second read.  That side hands
 * the jobs' ids to a worker (JobqDependRecheckTake), which settles their
 * dependents in a transaction of its own, with a snapshot that sees both
 * commits (finish.c, JobqRecheckDependents).  Either side seeing a count
 * change for any other reason (another job of the bucket) only costs one
 * such settlement.  A repeatable read enqueue took its snapshot before it
 * read the counts, so it always asks for the recheck; a prepared
 * transaction is left to the sweep, as its wake-ups are left to the poll.
 *
 * The workers' periodic sweep (JobqSettleWaitingJobs, every ten seconds)
 * covers jobs failed by the count of a dead worker's attempt, and the
 * dependents a finishing transaction could not lock: it waits for a row
 * that another transaction holds for a moment only (a session could keep
 * it for ever, with its jobq.cancel() of the dependent left open), then
 * leaves it to a sweep that it asks to come soon.
 *
 * This file decides; the jobs to cancel are cancelled by finish.c, which
 * calls in here whenever jobs end.
 *
 * IDENTIFICATION
 *		src/depend.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "pgstat.h"
#include "port/pg_bitutils.h"
#include "storage/spin.h"

#include "jobq.h"
#include "depend.h"
#include "prune.h"
#include "slots.h"
#include "wakeup.h"

/* the handshake's buckets of job ids (see the top of the file) */
#define JOBQ_DEPEND_BUCKETS		1024	/* a power of two */
#define JOBQ_DEPEND_BUCKET(id)	((uint64) (id) & (JOBQ_DEPEND_BUCKETS - 1))

/* the ids a transaction hands to the workers' recheck, at most */
#define JOBQ_RECHECK_IDS		64

/*
 * Whether some job may wait for others, in shared memory: set once one
 * does, by the enqueue (before its check) or by a sweep that found some,
 * so that finishing jobs looks for dependents only where there can be
 * any.
 */
typedef struct JobqDependState
{
	pg_atomic_uint32 dependents;
	/* the handshake of enqueues and finishes: see the top of the file */
	pg_atomic_uint64 finished[JOBQ_DEPEND_BUCKETS];
	pg_atomic_uint64 waiting[JOBQ_DEPEND_BUCKETS];
	/* jobs whose dependents a worker must settle again */
	pg_atomic_uint32 recheck_pending;
	slock_t		mutex;			/* guards the rest */
	bool		recheck_all;	/* too many ids: sweep every waiting job */
	int			nrecheck;
	int64		recheck[JOBQ_DEPEND_RECHECK_QUEUE];
} JobqDependState;

static JobqDependState *Depend = NULL;

/*
 * One side of the handshake, for the current transaction: the buckets of
 * the jobs it finished (or made a job wait for), the sum of the other
 * side's counts of those buckets as read before its snapshot, and the ids
 * to hand to the recheck.
 */
typedef struct JobqDependSide
{
	bool		any;
	bool		force;			/* recheck whatever the counts say */
	bool		overflow;		/* more ids than ids[] holds */
	int			nids;
	uint64		before;
	uint64		buckets[JOBQ_DEPEND_BUCKETS / 64];
	int64		ids[JOBQ_RECHECK_IDS];
} JobqDependSide;

static JobqDependSide finishing;
static JobqDependSide enqueuing;

Size
JobqDependShmemSize(void)
{
	return MAXALIGN(sizeof(JobqDependState));
}

/* at the server's start, and again after a crash; under AddinShmemInitLock */
void
JobqDependShmemInit(void)
{
	bool		found;

	Depend = ShmemInitStruct("jobq depend", JobqDependShmemSize(), &found);
	if (!found)
	{
		int			i;

		pg_atomic_init_u32(&Depend->dependents, 0);
		for (i = 0; i < JOBQ_DEPEND_BUCKETS; i++)
		{
			pg_atomic_init_u64(&Depend->finished[i], 0);
			pg_atomic_init_u64(&Depend->waiting[i], 0);
		}
		pg_atomic_init_u32(&Depend->recheck_pending, 0);
		SpinLockInit(&Depend->mutex);
		Depend->recheck_all = false;
		Depend->nrecheck = 0;
	}
}

/* May some job wait for others? */
bool
JobqDependentsMayExist(void)
{
	return pg_atomic_read_u32(&Depend->dependents) != 0;
}

void
JobqNoteDependents(bool exist)
{
	pg_atomic_write_u32(&Depend->dependents, exist ? 1 : 0);
}

/*
 * Note job id on one side of the handshake.  For a bucket seen for the
 * first time, the other side's count is read now from counts, or, with
 * counts NULL, is count_read, read by the caller before its snapshot.
 * The caller puts a memory barrier between the read and its snapshot.
 */
static void
side_note(JobqDependSide *side, int64 id, pg_atomic_uint64 *counts,
		  uint64 count_read)
{
	uint64		b = JOBQ_DEPEND_BUCKET(id);
	uint64		bit = UINT64CONST(1) << (b % 64);

	if (!side->any)
		JobqRegisterAtCommit();
	side->any = true;
	if ((side->buckets[b / 64] & bit) == 0)
	{
		side->buckets[b / 64] |= bit;
		side->before += counts != NULL ? pg_atomic_read_u64(&counts[b]) :
			count_read;
	}
	if (side->nids < JOBQ_RECHECK_IDS)
		side->ids[side->nids++] = id;
	else
		side->overflow = true;
}

/*
 * The current transaction finishes jobs ids[0..n-1]: called before it
 * settles their dependents, so that the counts are read before the
 * settlement's snapshot.
 */
void
JobqDependNoteFinished(const int64 *ids, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		side_note(&finishing, ids[i], Depend->waiting, 0);
	pg_memory_barrier();
}

/* hand ids to the workers' recheck, and wake one; no error may be raised */
static void
request_recheck(const JobqDependSide *side)
{
	int			i;

	SpinLockAcquire(&Depend->mutex);
	if (side->overflow || Depend->nrecheck + side->nids > JOBQ_DEPEND_RECHECK_QUEUE)
		Depend->recheck_all = true;
	else
		for (i = 0; i < side->nids; i++)
			Depend->recheck[Depend->nrecheck++] = side->ids[i];
	SpinLockRelease(&Depend->mutex);
	pg_atomic_write_u32(&Depend->recheck_pending, 1);
	JobqWakeWorkers(1);
}

/*
 * After the commit of one side: bump its own counts, then read the other
 * side's again; a change means the other side may have missed this
 * transaction, and this one the other.
 */
static void
side_after_commit(JobqDependSide *side, pg_atomic_uint64 *own,
				  pg_atomic_uint64 *other)
{
	uint64		after = 0;
	int			w;

	for (w = 0; w < JOBQ_DEPEND_BUCKETS / 64; w++)
	{
		uint64		bits = side->buckets[w];

		while (bits != 0)
		{
			int			b = w * 64 + pg_rightmost_one_pos64(bits);

			(void) pg_atomic_fetch_add_u64(&own[b], 1);
			bits &= bits - 1;
		}
	}
	/* fetch_add is a full barrier: the reads below come after the bumps */
	for (w = 0; w < JOBQ_DEPEND_BUCKETS / 64; w++)
	{
		uint64		bits = side->buckets[w];

		while (bits != 0)
		{
			int			b = w * 64 + pg_rightmost_one_pos64(bits);

			after += pg_atomic_read_u64(&other[b]);
			bits &= bits - 1;
		}
	}
	if (side->force || after != side->before)
		request_recheck(side);
}

static void
side_reset(JobqDependSide *side)
{
	if (!side->any)
		return;
	memset(side, 0, sizeof(JobqDependSide));
}

/*
 * The current transaction ended (wakeup.c's release callback, after the
 * commit is visible to every new snapshot): complete the handshake if it
 * committed.  No error may be raised here.
 */
void
JobqDependAtEndOfXact(bool isCommit)
{
	if (isCommit && enqueuing.any)
		side_after_commit(&enqueuing, Depend->waiting, Depend->finished);
	if (isCommit && finishing.any)
	{
		/*
		 * No job has waited since the server started: nothing can wait for
		 * the jobs finished.  An enqueue that makes one wait sets the flag
		 * before it reads the counts, and so before its snapshot; read
		 * here after the commit, a flag still clear means that snapshot
		 * sees this commit.
		 */
		pg_memory_barrier();
		if (JobqDependentsMayExist())
			side_after_commit(&finishing, Depend->finished, Depend->waiting);
	}
	side_reset(&enqueuing);
	side_reset(&finishing);
}

/*
 * A worker takes the ids whose dependents must be settled again, into
 * ids[] (room for JOBQ_DEPEND_RECHECK_QUEUE), or *all if there were too many (a
 * sweep instead).  False if there is nothing to do.
 */
bool
JobqDependRecheckTake(int64 *ids, int *n, bool *all)
{
	if (pg_atomic_read_u32(&Depend->recheck_pending) == 0)
		return false;
	/* cleared first: ids added from now on set it again */
	pg_atomic_write_u32(&Depend->recheck_pending, 0);
	pg_memory_barrier();
	SpinLockAcquire(&Depend->mutex);
	*all = Depend->recheck_all;
	*n = Depend->nrecheck;
	memcpy(ids, Depend->recheck, sizeof(int64) * Depend->nrecheck);
	Depend->recheck_all = false;
	Depend->nrecheck = 0;
	SpinLockRelease(&Depend->mutex);
	return *all || *n > 0;
}

/* the dependents of jobs $1 that wait, locked in id order */
static const char *lock_dependents_sql =
"SELECT id, ctid FROM jobq.job"
" WHERE not_before IS NOT NULL AND depends_on OPERATOR(pg_catalog.&&) $1"
" ORDER BY id FOR UPDATE";

/* the same, but only those nobody else holds */
static const char *lock_free_dependents_sql =
"SELECT id, ctid FROM jobq.job"
" WHERE not_before IS NOT NULL AND depends_on OPERATOR(pg_catalog.&&) $1"
" ORDER BY id FOR UPDATE SKIP LOCKED";

/*
 * How long a finishing transaction waits for the row of a dependent that
 * another transaction holds, in milliseconds.  Long enough for another
 * finishing transaction to settle it and commit; a session that keeps the
 * row (its jobq.cancel() of the dependent, left uncommitted) holds the
 * worker no longer than this.
 */
#define JOBQ_DEPENDENT_LOCK_WAIT_MS "200"

/*
 * Waiting jobs none of whose jobs is unfinished, for the sweep; skips
 * those being settled.
 */
static const char *lock_waiting_sql =
"SELECT id, ctid FROM jobq.job j WHERE not_before IS NOT NULL"
"   AND NOT EXISTS (SELECT 1 FROM jobq.job u"
"                    WHERE u.id OPERATOR(pg_catalog.=) ANY (j.depends_on))"
" ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED";

/*
 * What becomes of locked waiting jobs $1: the first of their jobs that
 * did not succeed (it is in the history, not succeeded), if any, and
 * whether one is unfinished.  A job that is in neither table (jobq.retention
 * 0) counts as succeeded.
 */
static const char *decide_sql =
"SELECT c.id,"
"       (SELECT pg_catalog.min(h.id) FROM jobq.job_history h"
"         WHERE h.id OPERATOR(pg_catalog.=) ANY (c.depends_on)"
"           AND h.state OPERATOR(pg_catalog.<>) 'succeeded') AS bad,"
"       EXISTS (SELECT 1 FROM jobq.job u"
"                WHERE u.id OPERATOR(pg_catalog.=) ANY (c.depends_on)) AS waiting"
"  FROM jobq.job c"
" WHERE c.id OPERATOR(pg_catalog.=) ANY ($1) AND c.not_before IS NOT NULL";

/*
 * free waiting jobs $1: due at the run_at they asked for (whether external
 * executors run them: from 0.5.0 on)
 */
#define FREE_SQL(external) \
"UPDATE jobq.job SET run_at = not_before, not_before = NULL" \
" WHERE id OPERATOR(pg_catalog.=) ANY ($1)" \
" RETURNING id, priority, run_at, " external
static const char *free_sql = FREE_SQL("false");
static const char *free_external_sql = FREE_SQL("external");

static Datum
id_array(const int64 *ids, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
		d[i] = Int64GetDatum(ids[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
}

/*
 * Lock the jobs a statement returns (id, ctid); returns how many, in
 * *locked.
 */
static int
lock_jobs(const char *sql, int nargs, Oid *argtypes, Datum *values,
		  JobqJob **locked)
{
	uint64		i;
	int			n;

	if (JobqExecuteAsOwner(sql, nargs, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not lock the dependents of jobq jobs");
	/* outside SPI's memory, which SPI_finish() frees */
	*locked = SPI_palloc(sizeof(JobqJob) * Max(SPI_processed, 1));
	memset(*locked, 0, sizeof(JobqJob) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		(*locked)[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		(*locked)[i].tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 2, &isnull));
		(*locked)[i].attempts = -1; /* as they are */
	}
	n = (int) SPI_processed;
	SPI_finish();
	return n;
}

/*
 * Settle the n locked waiting jobs of *lockedp: free those whose jobs all
 * succeeded; *lockedp becomes the ones whose job did not succeed (their
 * count is returned), with that job in (*because)[], for the caller to
 * cancel (finish.c).  A
 * new statement, a new snapshot: it sees what committed while we waited
 * for the locks.
 */
static int
settle_locked(JobqJob **lockedp, int n, int64 **because)
{
	JobqJob    *locked = *lockedp;
	JobqJob    *cancel = palloc(sizeof(JobqJob) * Max(n, 1));
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		values[1];
	int64	   *ids = palloc(sizeof(int64) * Max(n, 1));
	int64	   *free_ids = palloc(sizeof(int64) * Max(n, 1));
	int			nfree = 0;
	int			nc = 0;
	uint64		i;
	int			k;

	for (k = 0; k < n; k++)
		ids[k] = locked[k].id;
	values[0] = id_array(ids, n);
	if (JobqExecuteAsOwner(decide_sql, 1, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not settle the dependents of jobq jobs");
	*because = SPI_palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		bad_null;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		Datum		bad = SPI_getbinval(tup, desc, 2, &bad_null);
		bool		waiting = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));

		if (!bad_null)
		{
			for (k = 0; k < n && locked[k].id != id; k++)
				;
			if (k == n)
				elog(ERROR, "jobq settled job " INT64_FORMAT ", which it had not locked", id);
			cancel[nc] = locked[k];
			(*because)[nc++] = DatumGetInt64(bad);
		}
		else if (!waiting)
			free_ids[nfree++] = id;
	}
	SPI_finish();

	if (nfree > 0)
	{
		values[0] = id_array(free_ids, nfree);
		if (JobqExecuteAsOwner(JobqSchemaGet()->executors ? free_external_sql : free_sql,
							   1, argtypes, values, false) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not free the dependents of jobq jobs");
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;

			JobqNoteEnqueue(DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull)),
							DatumGetInt16(SPI_getbinval(tup, desc, 2, &isnull)),
							DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)),
							DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull)));
		}
		SPI_finish();
	}
	*lockedp = cancel;
	return nc;
}

/*
 * Lock the dependents of the jobs in ids (an int8[]), waiting at most
 * JOBQ_DEPENDENT_LOCK_WAIT_MS for a row another transaction holds.  Past
 * that, only the rows nobody holds are locked, and the sweep is asked to
 * come soon for the others (it skips rows that are held, so nothing
 * waits on them).  Returns how many were locked, in *locked.
 */
static int
lock_dependents(Datum ids, JobqJob **locked)
{
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		values[1] = {ids};
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	uint32		save_holdoff = QueryCancelHoldoffCount;
	volatile int n = 0;

	/*
	 * A worker holds cancel interrupts between jobs, and the lock timeout
	 * is a cancel interrupt: let it through for this wait.  A cancel still
	 * pending from before is stale, as at the start of a job (no job of
	 * the worker is in hand: jobq.cancel() and shutdowns do not cancel
	 * here).
	 */
	if (save_holdoff > 0)
		QueryCancelPending = false;
	QueryCancelHoldoffCount = 0;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		int			save_nestlevel = NewGUCNestLevel();

		(void) set_config_option("lock_timeout", JOBQ_DEPENDENT_LOCK_WAIT_MS,
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
		n = lock_jobs(lock_dependents_sql, 1, argtypes, values, locked);
		AtEOXact_GUC(true, save_nestlevel);
		QueryCancelHoldoffCount = save_holdoff;
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		QueryCancelHoldoffCount = save_holdoff;
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			ReThrowError(edata);
		FreeErrorData(edata);

		n = lock_jobs(lock_free_dependents_sql, 1, argtypes, values, locked);
		JobqPruneAgainSoon();
	}
	PG_END_TRY();
	return n;
}

/*
 * Jobs ids[0..n-1] ended in the current transaction: lock the jobs that
 * wait for them (in id order, so that two transactions that end two jobs
 * of one dependent cannot deadlock), and settle them.  Returns how many
 * must be cancelled, in *cancel, with the job that did not succeed in
 * *because.  Needs an active snapshot.
 */
int
JobqSettleDependents(const int64 *ids, int n, JobqJob **cancel, int64 **because)
{
	int			nlocked;

	nlocked = lock_dependents(id_array(ids, n), cancel);
	if (nlocked == 0)
		return 0;
	return settle_locked(cancel, nlocked, because);
}

/*
 * The sweep: settle every waiting job that nobody else is settling and
 * none of whose jobs is unfinished.  Returns how many must be cancelled,
 * as JobqSettleDependents.
 */
int
JobqSettleWaitingJobs(JobqJob **cancel, int64 **because)
{
	int			nlocked = lock_jobs(lock_waiting_sql, 0, NULL, NULL, cancel);

	/* jobs left waiting from before a restart: settle them from now on */
	if (nlocked == 0 && !JobqDependentsMayExist())
	{
		if (JobqExecuteAsOwner("SELECT 1 FROM jobq.job WHERE not_before IS NOT NULL LIMIT 1",
							   0, NULL, NULL, false) != SPI_OK_SELECT)
			elog(ERROR, "could not look for waiting jobq jobs");
		if (SPI_processed > 0)
			JobqNoteDependents(true);
		SPI_finish();
	}
	if (nlocked == 0)
		return 0;
	return settle_locked(cancel, nlocked, because);
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
	Datum	   *elems;
	int			nelems;
	uint64	   *finished_before;
	int			k;
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

	/*
	 * The first half of the handshake (see the top of the file), before
	 * the snapshot of the check: the flag that makes finishing jobs look
	 * for dependents, then the "finished" counts of the jobs' buckets.
	 */
	JobqNoteDependents(true);
	pg_memory_barrier();
	deconstruct_array(deps, INT8OID, 8, true, TYPALIGN_DOUBLE,
					  &elems, NULL, &nelems);
	finished_before = palloc(sizeof(uint64) * Max(nelems, 1));
	for (k = 0; k < nelems; k++)
		finished_before[k] =
			pg_atomic_read_u64(&Depend->finished[JOBQ_DEPEND_BUCKET(DatumGetInt64(elems[k]))]);
	pg_memory_barrier();

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

	/*
	 * A job that waits: complete the handshake after the commit.  Its jobs
	 * that had succeeded are noted too, which costs nothing but a recheck
	 * that another job of their buckets may cause.
	 */
	if (wait)
	{
		for (k = 0; k < nelems; k++)
			side_note(&enqueuing, DatumGetInt64(elems[k]), NULL,
					  finished_before[k]);
		if (IsolationUsesXactSnapshot())
			enqueuing.force = true;
	}
	return wait;
}
