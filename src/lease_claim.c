/*-------------------------------------------------------------------------
 *
 * lease_claim.c
 *		jobq.claim(): external executors take due jobs, each with a lease.
 *
 * The claim is written without an SQL statement (store.c): it walks the
 * external claim index, locks each job it takes without waiting and
 * without following the row's update chain, and updates it: attempt
 * counted, started, leased (lease.c).  A job that another transaction
 * holds, or changed since the snapshot, is passed over and left
 * untouched; FOR UPDATE SKIP LOCKED would follow the chain (EvalPlanQual)
 * and lock, to the end of the transaction, rows that other claims took
 * since the snapshot.  Each pass of a claim runs in a subtransaction, so
 * that an error leaves the caller's transaction as it was, undone when it
 * took nothing.
 *
 * A role claims only the jobs of the external tasks it may run: those it
 * registered and those an administrator allowed it (task.c).
 *
 * The claim index is consumed from its head, and each claimed job leaves
 * a dead entry there until vacuum (or, under a long transaction, for as
 * long as it lasts).  So claims start at floors, as the workers' do
 * (floors.c keeps a second set for this index; claim_jobs() says how it
 * is kept safe).
 *
 * Limits.  A claim honours paused queues, queue concurrency and per-role
 * max_running, counting both the workers' jobs and the leases held
 * (limits.c).  While one of those limits could be reached by the claim,
 * the claims of external executors are serialized by a session lock,
 * which is only ever tried, and count the jobs they take as they go.
 *
 * A claim with a wait sleeps until a commit makes a job it may take due
 * (wakeup.c), the next job is due, or the wait ends.
 *
 * IDENTIFICATION
 *		src/lease_claim.c
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
#include "utils/inval.h"
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
#include "floors.h"
#include "wakeup.h"

PG_FUNCTION_INFO_V1(jobq_claim);

/* the lock of limited claims: "jobq" in ASCII, a field4 of ours */
#define JOBQ_CLAIM_LOCK_KEY		0x6A6F6271
#define JOBQ_CLAIM_LOCK_FIELD4	0x4A53

/* the earliest expiry this transaction's claims gave, for its commit */
static TimestampTz pending_expiry = DT_NOEND;
static bool xact_callback_registered = false;
/* this backend holds the lock of limited claims (a session lock) */
static bool claim_lock_held = false;
/*
 * The (sub)transactions of the current transaction that claimed jobs, by
 * SubTransactionId: undoing one makes the executors' floors invalid (its
 * jobs are claimable again, perhaps below a floor).  A subtransaction that
 * commits hands its claims to its parent.  With more than fit, any undo
 * does.
 */
#define JOBQ_CLAIMING_SUBXACTS	8
static SubTransactionId claiming_subxacts[JOBQ_CLAIMING_SUBXACTS];
static int	n_claiming_subxacts = 0;
static bool claiming_overflow = false;
/* this backend's claimer entry in the executors' floors, or -1 */
static int	floor_claimer = -1;

static void claim_lock_release(void);

/* the statements of the claim, prepared again after the schema changed */
static SPIPlanPtr next_due_plan = NULL;

/* when a job that claim $1.. may take is due next (see the claim) */
static const char *next_due_sql =
"SELECT pg_catalog.min(run_at) FROM jobq.job"
" WHERE external AND lease_token IS NULL"
"   AND run_at OPERATOR(pg_catalog.>) $1"
"   AND ($2 OR task OPERATOR(pg_catalog.=) ANY ($3))"
"   AND ($4 OR queue OPERATOR(pg_catalog.=) ANY ($5))";

/*
 * The end of a transaction that claimed: its leases are published at the
 * commit (lease.c), not before, and a transaction that claimed may not
 * be prepared; the floors are forgotten if its claims are undone, and the
 * lock of limited claims is let go.
 */
static void
claim_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_PREPARE && pending_expiry != DT_NOEND)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that has claimed jobs of external tasks"),
				 errdetail("A lease must be committed to count.")));
	if (event == XACT_EVENT_COMMIT && pending_expiry != DT_NOEND)
		JobqLeasesCommitted(pending_expiry);
	if (event == XACT_EVENT_ABORT && (n_claiming_subxacts > 0 || claiming_overflow))
		JobqFloorsReset(JOBQ_FLOORS_EXECUTORS);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		n_claiming_subxacts = 0;
		claiming_overflow = false;
		pending_expiry = DT_NOEND;
		if (claim_lock_held)
			claim_lock_release();
	}
}

/* this (sub)transaction claims jobs */
static void
note_floors_claimed(void)
{
	SubTransactionId me = GetCurrentSubTransactionId();
	int			i;

	for (i = 0; i < n_claiming_subxacts; i++)
		if (claiming_subxacts[i] == me)
			return;
	if (n_claiming_subxacts < JOBQ_CLAIMING_SUBXACTS)
		claiming_subxacts[n_claiming_subxacts++] = me;
	else
		claiming_overflow = true;
}

/*
 * A subtransaction ended.  Its abort (a rollback to a savepoint, an error
 * caught, a claim's own subtransaction after an error) undoes its claims
 * and those of the subtransactions it committed; the callback runs once
 * the abort is recorded, so a claim that starts after the reset sees the
 * jobs claimable again.
 */
static void
claim_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	bool		undone = false;
	int			i;

	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (i = 0; i < n_claiming_subxacts; i++)
			if (claiming_subxacts[i] == mySubid)
				claiming_subxacts[i] = parentSubid;
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		for (i = 0; i < n_claiming_subxacts;)
			if (claiming_subxacts[i] == mySubid)
			{
				undone = true;
				claiming_subxacts[i] = claiming_subxacts[--n_claiming_subxacts];
			}
			else
				i++;
		if (undone || claiming_overflow)
			JobqFloorsReset(JOBQ_FLOORS_EXECUTORS);
	}
}

static void
register_xact_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterSubXactCallback(claim_subxact_callback, NULL);
		RegisterXactCallback(claim_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

static void
note_expiry_at_commit(TimestampTz t)
{
	register_xact_callback();
	if (t < pending_expiry)
		pending_expiry = t;
}

/*
 * The lock of limited claims.  A session lock, so that a claim that took
 * nothing (and may wait for a while) lets it go at once; one that took
 * jobs keeps it until its transaction ends, so that the next claim counts
 * its leases.  It is only ever tried: a claim that finds it taken counts
 * as having found nothing, and tries again shortly (see jobq_claim()).
 */
static void
claim_lock_tag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, JOBQ_CLAIM_LOCK_KEY, 0,
						 JOBQ_CLAIM_LOCK_FIELD4);
}

static bool
claim_lock_acquire(void)
{
	LOCKTAG		tag;

	if (claim_lock_held)
		return true;
	register_xact_callback();
	claim_lock_tag(&tag);
	/* never waited for: its holder may keep it until its commit */
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
		return false;
	claim_lock_held = true;
	return true;
}

static void
claim_lock_release(void)
{
	LOCKTAG		tag;

	claim_lock_tag(&tag);
	LockRelease(&tag, ExclusiveLock, true);
	claim_lock_held = false;
}

/*
 * The elements of a text[] argument as C strings, *n of them: names of 1
 * to maxlen bytes, none null.
 */
static char **
check_names(ArrayType *a, const char *what, int maxlen, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **names;
	int			i;

	if (ARR_NDIM(a) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", what)));
	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	names = palloc(sizeof(char *) * Max(*n, 1));
	for (i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain nulls", what)));
		if (VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i])) == 0 ||
			VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i])) > maxlen)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must hold names of 1 to %d bytes", what, maxlen)));
		names[i] = TextDatumGetCString(elems[i]);
	}
	return names;
}

static Datum
empty_array(Oid elemtype)
{
	return PointerGetDatum(construct_empty_array(elemtype));
}

/* what one jobq.claim() asks for */
typedef struct ClaimArgs
{
	bool		any_task;
	Datum		tasks;
	char	  **task_names;		/* the elements of tasks */
	int			ntasks;
	bool		any_queue;
	Datum		queues;
	char	  **queue_names;	/* the elements of queues */
	int			nqueues;
	int			n;				/* jobs wanted */
	int64		lease_ms;
	Datum		executor;
	const char *executor_name;
} ClaimArgs;

static bool
name_in(const char *name, char **names, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

/* does the claim take jobs of queue? */
static bool
claims_queue(ClaimArgs *args, const char *queue)
{
	return args->any_queue || name_in(queue, args->queue_names, args->nqueues);
}

/* the same, for the limits (JobqLimitsMayBind) */
static bool
claims_queue_of(const char *queue, void *arg)
{
	return claims_queue((ClaimArgs *) arg, queue);
}

/* the columns that a claim changes, and their attribute numbers */
static const JobColumn claim_writes[] = {
	JC_ATTEMPTS, JC_STARTED_AT, JC_EXECUTOR, JC_LEASE_TOKEN, JC_LEASE_EXPIRES_AT
};
static Bitmapset *claim_changed = NULL;
static uint64 claim_changed_generation = 0;

/* jobq.job opened for the claim, and claim_changed made for its columns */
static Relation
open_claim_table(void)
{
	Relation	rel = JobqLeaseOpenJobTable();

	if (claim_changed_generation != JobqLeaseJobTable.generation || claim_changed == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		int			i;

		bms_free(claim_changed);
		claim_changed = NULL;
		for (i = 0; i < lengthof(claim_writes); i++)
			claim_changed = bms_add_member(claim_changed, JobqLeaseAttno[claim_writes[i]]);
		MemoryContextSwitchTo(oldcxt);
		claim_changed_generation = JobqLeaseJobTable.generation;
	}
	return rel;
}

/*
 * Has another transaction updated or deleted the row version in slot (a
 * buffer heap slot), or is it doing so?  Then the claim has no need to
 * try (the updater, most often, is a concurrent claim).  Read without the
 * buffer's lock, so only a hint: a wrong "no" costs a failed update, and a
 * wrong "yes" (an updater that aborted after the snapshot) skips the job
 * for this claim only, as the visibility check of the next one marks the
 * updater aborted.
 */
static bool
being_updated(TupleTableSlot *slot)
{
	HeapTupleHeader tup = ((BufferHeapTupleTableSlot *) slot)->base.tuple->t_data;
	uint16		infomask = tup->t_infomask;

	return !(infomask & HEAP_XMAX_INVALID) && !HEAP_XMAX_IS_LOCKED_ONLY(infomask) &&
		TransactionIdIsValid(HeapTupleHeaderGetRawXmax(tup));
}

/* one claim in progress: what it asks, what it may take, what it took */
typedef struct ClaimRun
{
	ClaimArgs  *args;
	int			n;				/* jobs wanted */
	int			got;			/* jobs taken */
	TimestampTz now;
	TimestampTz expires;
	JobqLimitTally limits;		/* what is held of each limit */
	bool		capped;			/* count jobs against the limits */
	Relation	rel;
	Relation	index;
	Snapshot	snapshot;		/* of the scan in progress */
	TupleTableSlot *slot;		/* the version seen */
	TupleTableSlot *newslot;	/* the version written */
	MemoryContext rowcxt;
	Tuplestorestate *tupstore;
	TupleDesc	tupdesc;
} ClaimRun;

/*
 * Why the claim passed over a job it saw, or that it took it.  A job
 * passed over that may still be claimable (another claim's filters may
 * take it, a lock may go away) is where the floor of its level stops.
 */
typedef enum ClaimSeen
{
	SEEN_TAKEN,
	SEEN_GONE,					/* leased, or changed by a committed transaction */
	SEEN_CLAIMABLE				/* filtered out, blocked, held by a transaction */
} ClaimSeen;

/*
 * Try to take the job whose version the run's slot holds (all attributes
 * deformed): attempt counted, started, leased.
 */
static ClaimSeen
claim_one(ClaimRun *run)
{
	TupleTableSlot *slot = run->slot;
	TupleTableSlot *newslot = run->newslot;
	ClaimArgs  *args = run->args;
	pg_uuid_t  *token;
	pg_uuid_t  *digest;
	char	   *task;
	char	   *queue;
	Oid			owner;
	bool		blocked;
	TM_FailureData tmfd;
	TM_Result	result;
	Datum		row[13];
	bool		nulls[13];

	/* the version seen may be newer than the index entry */
	if (JOB_ISNULL(slot, JC_EXTERNAL) || !DatumGetBool(JOB_VALUE(slot, JC_EXTERNAL)) ||
		!JOB_ISNULL(slot, JC_LEASE_TOKEN) || JOB_ISNULL(slot, JC_TASK))
		return SEEN_GONE;
	task = TextDatumGetCString(JOB_VALUE(slot, JC_TASK));
	queue = TextDatumGetCString(JOB_VALUE(slot, JC_QUEUE));
	owner = DatumGetObjectId(JOB_VALUE(slot, JC_OWNER));
	blocked = JobqLimitsBlock(&run->limits, queue, owner);
	if (blocked || DatumGetTimestampTz(JOB_VALUE(slot, JC_RUN_AT)) > run->now ||
		(!args->any_task && !name_in(task, args->task_names, args->ntasks)) ||
		!claims_queue(args, queue) || !JobqTaskServes(task, GetUserId(), owner))
		return SEEN_CLAIMABLE;

	/*
	 * Lock the row first, without waiting (heap_update() supports no
	 * "wait = false"): a job that another transaction holds is passed over.
	 * The lock does not follow the row's update chain, so unlike FOR UPDATE
	 * SKIP LOCKED (and EvalPlanQual) it never locks a newer version, taken
	 * by another claim since the snapshot, to the end of the transaction.
	 */
	result = table_tuple_lock(run->rel, &slot->tts_tid, run->snapshot, slot,
							  GetCurrentCommandId(false), LockTupleNoKeyExclusive,
							  LockWaitSkip, 0, &tmfd);
	if (result == TM_WouldBlock)
		return SEEN_CLAIMABLE;	/* another transaction holds it */
	if (result != TM_Ok)
		return SEEN_GONE;		/* changed since the snapshot */
	slot_getallattrs(slot);

	token = palloc(sizeof(pg_uuid_t));
	digest = palloc(sizeof(pg_uuid_t));
	JobqLeaseNewToken(token, digest);
	ExecClearTuple(newslot);
	memcpy(newslot->tts_values, slot->tts_values,
		   sizeof(Datum) * slot->tts_tupleDescriptor->natts);
	memcpy(newslot->tts_isnull, slot->tts_isnull,
		   sizeof(bool) * slot->tts_tupleDescriptor->natts);
	JOB_VALUE(newslot, JC_ATTEMPTS) =
		Int32GetDatum(DatumGetInt32(JOB_VALUE(slot, JC_ATTEMPTS)) + 1);
	JOB_VALUE(newslot, JC_STARTED_AT) = TimestampTzGetDatum(run->now);
	JOB_ISNULL(newslot, JC_STARTED_AT) = false;
	JOB_VALUE(newslot, JC_LEASE_TOKEN) = UUIDPGetDatum(digest);
	JOB_ISNULL(newslot, JC_LEASE_TOKEN) = false;
	JOB_VALUE(newslot, JC_LEASE_EXPIRES_AT) = TimestampTzGetDatum(run->expires);
	JOB_ISNULL(newslot, JC_LEASE_EXPIRES_AT) = false;
	JOB_VALUE(newslot, JC_EXECUTOR) = args->executor;
	JOB_ISNULL(newslot, JC_EXECUTOR) = false;
	ExecStoreVirtualTuple(newslot);

	/* locked by this transaction: the update neither waits nor fails */
	result = JobqTableUpdate(&JobqLeaseJobTable, run->rel, &slot->tts_tid, newslot,
							 claim_changed, true, &tmfd);
	if (result != TM_Ok)
		elog(ERROR, "jobq could not claim job " INT64_FORMAT ", which it had locked: %d",
			 DatumGetInt64(JOB_VALUE(slot, JC_ID)), (int) result);
	/* undoing this (sub)transaction must forget the floors (see claim_jobs) */
	note_floors_claimed();

	row[0] = JOB_VALUE(newslot, JC_ID);
	row[1] = JOB_VALUE(newslot, JC_TASK);
	row[2] = JOB_VALUE(newslot, JC_PAYLOAD);
	row[3] = JOB_VALUE(newslot, JC_QUEUE);
	row[4] = JOB_VALUE(newslot, JC_PRIORITY);
	row[5] = JOB_VALUE(newslot, JC_ATTEMPTS);
	row[6] = JOB_VALUE(newslot, JC_MAX_ATTEMPTS);
	row[7] = JOB_VALUE(newslot, JC_TIMEOUT);
	row[8] = UUIDPGetDatum(token);
	row[9] = TimestampTzGetDatum(run->expires);
	row[10] = JOB_VALUE(newslot, JC_OWNER);
	row[11] = JOB_VALUE(newslot, JC_RUN_AT);
	row[12] = JOB_VALUE(newslot, JC_CREATED_AT);
	memset(nulls, 0, sizeof(nulls));
	nulls[2] = JOB_ISNULL(newslot, JC_PAYLOAD);
	nulls[7] = JOB_ISNULL(newslot, JC_TIMEOUT);
	/* the caller gets the payload itself, not a pointer into TOAST */
	if (!nulls[2])
		row[2] = PointerGetDatum(pg_detoast_datum_packed((struct varlena *)
														 DatumGetPointer(row[2])));
	tuplestore_putvalues(run->tupstore, run->tupdesc, row, nulls);

	if (run->capped)
		JobqLimitsTake(&run->limits, queue, owner);
	run->got++;
	return SEEN_TAKEN;
}

/*
 * Claim from one stretch of the external claim index, with snapshot: one
 * priority level from its floor (level not NULL, floor NULL for the
 * level's start), or the whole index.  Returns whether the level's floor
 * may be raised, to *raise_to: the first job passed over that may still
 * be claimable, else the last job seen.
 */
static bool
claim_scan(ClaimRun *run, Snapshot snapshot, const int16 *level,
		   const JobqFloor *floor, JobqFloor *raise_to)
{
	ScanKeyData keys[3];
	ScanKeyData rowkeys[2];
	int			nkeys = 0;
	IndexScanDesc scan;
	bool		seen = false;
	bool		stopped = false;

	if (level != NULL)
		ScanKeyInit(&keys[nkeys++], 1, BTEqualStrategyNumber, F_INT2EQ,
					Int16GetDatum(*level));
	if (floor != NULL && floor->run_at != DT_NOBEGIN)
	{
		/* (run_at, id) >= the floor's: a row comparison, as the planner makes */
		ScanKeyEntryInitialize(&rowkeys[0], SK_ROW_MEMBER, 2, BTGreaterEqualStrategyNumber,
							   TIMESTAMPTZOID, InvalidOid, F_TIMESTAMPTZ_CMP,
							   TimestampTzGetDatum(floor->run_at));
		ScanKeyEntryInitialize(&rowkeys[1], SK_ROW_MEMBER | SK_ROW_END, 3,
							   BTGreaterEqualStrategyNumber, INT8OID, InvalidOid,
							   F_BTINT8CMP, Int64GetDatum(floor->id));
		memset(&keys[nkeys], 0, sizeof(ScanKeyData));
		keys[nkeys].sk_flags = SK_ROW_HEADER;
		keys[nkeys].sk_attno = 2;
		keys[nkeys].sk_strategy = BTGreaterEqualStrategyNumber;
		keys[nkeys].sk_argument = PointerGetDatum(rowkeys);
		nkeys++;
	}
	/* due jobs only: run_at, the index's second column, at most now */
	ScanKeyInit(&keys[nkeys++], 2, BTLessEqualStrategyNumber, F_TIMESTAMPTZ_LE,
				TimestampTzGetDatum(run->now));
	run->snapshot = snapshot;
	scan = index_beginscan(run->rel, run->index, snapshot, nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);

	while (run->got < run->n && index_getnext_slot(scan, ForwardScanDirection, run->slot))
	{
		MemoryContext oldcxt;
		ClaimSeen	what;
		JobqFloor	key;
		bool		isnull;

		CHECK_FOR_INTERRUPTS();
		/* see being_updated(): another transaction holds it, most often */
		what = SEEN_CLAIMABLE;
		if (!being_updated(run->slot))
		{
			MemoryContextReset(run->rowcxt);
			oldcxt = MemoryContextSwitchTo(run->rowcxt);
			slot_getallattrs(run->slot);
			what = claim_one(run);
			MemoryContextSwitchTo(oldcxt);
		}
		if (level == NULL || stopped)
			continue;
		key.priority = *level;
		key.run_at = DatumGetTimestampTz(slot_getattr(run->slot, JobqLeaseAttno[JC_RUN_AT],
													  &isnull));
		key.id = DatumGetInt64(slot_getattr(run->slot, JobqLeaseAttno[JC_ID], &isnull));
		*raise_to = key;
		seen = true;
		stopped = (what == SEEN_CLAIMABLE);
	}
	index_endscan(scan);
	return seen;
}

/*
 * Claim up to n jobs into tupstore; returns how many, or -1 if another
 * claim holds the lock of limited claims.  Needs SPI and an active
 * snapshot, and runs in the caller's transaction.
 *
 * The claim walks the external claim index in the workers' order and
 * writes each job it takes directly (store.c): attempt counted, started,
 * leased.  A job that another transaction is changing or has locked (a
 * concurrent claim, a cancel) or has changed since the snapshot is
 * passed over, as SKIP LOCKED would, and left untouched (see the top).
 *
 * Floors (floors.c, the executors' set; claim.c explains them): each
 * level is claimed from its floor, with a snapshot taken after the claim
 * began there, and the floor is raised to the first job passed over that
 * may still be claimable (filtered out, blocked, held by a transaction),
 * else to the last job seen.  Whatever makes a job claimable again notes
 * its key when it ends (JobqNoteEnqueue): an enqueue, a retry, a release,
 * an expiry.  A claim that is undone (an abort, or a rollback to a
 * savepoint, after it took jobs) makes the floors invalid, as does a
 * claim with a snapshot older than its start (REPEATABLE READ): that one
 * claims from the start and raises nothing.
 */
static int
claim_jobs(ClaimArgs *args, int n, Tuplestorestate *tupstore, TupleDesc tupdesc)
{
	ClaimRun	run;
	int16		levels[JOBQ_FLOOR_LEVELS];
	int			nlevels;
	int			i;

	register_xact_callback();
	memset(&run, 0, sizeof(run));
	run.args = args;
	run.n = n;
	run.now = GetCurrentTimestamp();
	run.expires = TimestampTzPlusMilliseconds(run.now, args->lease_ms);
	run.tupstore = tupstore;
	run.tupdesc = tupdesc;

	/*
	 * With a limit that this claim could reach (of a queue it may claim
	 * from, or of any role), claims are serialized, and count as they go.
	 */
	JobqLimitsRead(&run.limits);
	run.capped = JobqLimitsMayBind(&run.limits, claims_queue_of, args);
	if (run.capped)
	{
		if (!claim_lock_acquire())
			return -1;
		JobqLimitsCountHeld(&run.limits);
	}

	run.rel = open_claim_table();
	run.index = JobqLeaseOpenJobIndex(JOBQ_REL_EXTERNAL_IDX);
	run.slot = table_slot_create(run.rel, NULL);
	run.newslot = JobqTableSlot(&JobqLeaseJobTable);
	run.rowcxt = AllocSetContextCreate(CurrentMemoryContext, "jobq claim row",
									   ALLOCSET_DEFAULT_SIZES);

	if (!IsolationUsesXactSnapshot())
		JobqFloorsDiscover(JOBQ_FLOORS_EXECUTORS);
	if (!IsolationUsesXactSnapshot() &&
		JobqFloorsGet(JOBQ_FLOORS_EXECUTORS, levels, NULL, &nlevels) &&
		(floor_claimer = JobqFloorClaimerTake()) >= 0)
	{
		for (i = 0; i < nlevels && run.got < n; i++)
		{
			JobqFloor	floor;
			JobqFloor	raise_to;
			bool		floored;
			bool		raise;

			floored = JobqFloorClaimBegin(JOBQ_FLOORS_EXECUTORS, floor_claimer,
										  levels[i], &floor);
			/* a snapshot taken after the claim began (see floors.c) */
			PushActiveSnapshot(GetTransactionSnapshot());
			raise = claim_scan(&run, GetActiveSnapshot(), &levels[i],
							   floored ? &floor : NULL, &raise_to);
			PopActiveSnapshot();
			if (floored)
				JobqFloorClaimEnd(JOBQ_FLOORS_EXECUTORS, floor_claimer, levels[i],
								  raise, raise_to.run_at, raise_to.id);
		}
		JobqFloorClaimerGive(floor_claimer);
		floor_claimer = -1;
	}
	else
		(void) claim_scan(&run, GetActiveSnapshot(), NULL, NULL, NULL);

	ExecDropSingleTupleTableSlot(run.slot);
	ExecDropSingleTupleTableSlot(run.newslot);
	MemoryContextDelete(run.rowcxt);
	index_close(run.index, NoLock);
	table_close(run.rel, NoLock);

	if (run.got > 0)
		note_expiry_at_commit(run.expires);
	else if (claim_lock_held && pending_expiry == DT_NOEND)
		claim_lock_release();	/* nothing of this transaction to count */
	return run.got;
}

/* when the next job that this claim may take is due; DT_NOEND if none */
static TimestampTz
claim_next_due(ClaimArgs *args)
{
	Oid			argtypes[5] = {TIMESTAMPTZOID, BOOLOID, TEXTARRAYOID, BOOLOID,
	TEXTARRAYOID};
	Datum		values[5];
	bool		isnull;
	Datum		d;

	values[0] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[1] = BoolGetDatum(args->any_task);
	values[2] = args->tasks;
	values[3] = BoolGetDatum(args->any_queue);
	values[4] = args->queues;
	if (JobqExecuteKeptAsOwner(JobqLeasePlan(&next_due_plan, next_due_sql, 5, argtypes),
							   values) != SPI_OK_SELECT)
		elog(ERROR, "could not read when jobq jobs are due");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

static void
claim_wait_cleanup(int code, Datum arg)
{
	JobqClaimWaitEnd();
	if (floor_claimer >= 0)
	{
		JobqFloorClaimerGive(floor_claimer);
		floor_claimer = -1;
	}
}

/*
 * The arguments of jobq.claim() into *args, checked: an error for each
 * that is out of range.  Also the caller's wait (0: none) and where it
 * runs (host NULL and pid 0 when not given).
 */
static void
claim_args_parse(FunctionCallInfo fcinfo, ClaimArgs *args, int64 *wait_ms,
				 char **host, int32 *pid)
{
	memset(args, 0, sizeof(ClaimArgs));
	args->any_task = PG_ARGISNULL(0);
	if (args->any_task)
		args->tasks = empty_array(TEXTOID);
	else
	{
		args->tasks = PG_GETARG_DATUM(0);
		args->task_names = check_names(PG_GETARG_ARRAYTYPE_P(0), "tasks",
									   NAMEDATALEN - 1, &args->ntasks);
	}
	args->any_queue = PG_ARGISNULL(1);
	if (args->any_queue)
		args->queues = empty_array(TEXTOID);
	else
	{
		args->queues = PG_GETARG_DATUM(1);
		args->queue_names = check_names(PG_GETARG_ARRAYTYPE_P(1), "queues",
										JOBQ_MAX_QUEUE_NAME, &args->nqueues);
	}
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("n must not be null")));
	args->n = PG_GETARG_INT32(2);
	if (args->n < 1 || args->n > JOBQ_MAX_CLAIM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("n must be between 1 and %d, not %d", JOBQ_MAX_CLAIM, args->n)));
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lease must not be null")));
	args->lease_ms = JobqLeaseIntervalMs(PG_GETARG_INTERVAL_P(3), "lease", false);
	if (PG_ARGISNULL(4))
	{
		/* the session's application_name, or its process */
		if (application_name != NULL && application_name[0] != '\0')
			args->executor_name = pstrdup(application_name);
		else
			args->executor_name = psprintf("backend %d", MyProcPid);
	}
	else
	{
		args->executor_name = text_to_cstring(PG_GETARG_TEXT_PP(4));
		if (args->executor_name[0] == '\0' ||
			strlen(args->executor_name) > NAMEDATALEN - 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("executor name must be 1 to %d bytes long", NAMEDATALEN - 1)));
	}
	args->executor = CStringGetTextDatum(args->executor_name);
	if (PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("wait must not be null"),
				 errhint("Omit the wait argument, or pass 0, not to wait.")));
	*wait_ms = JobqLeaseIntervalMs(PG_GETARG_INTERVAL_P(5), "wait", true);
	*host = NULL;
	if (!PG_ARGISNULL(6))
	{
		*host = text_to_cstring(PG_GETARG_TEXT_PP(6));
		if (strlen(*host) > NAMEDATALEN - 1)
			ereport(ERROR,
					(errcode(ERRCODE_NAME_TOO_LONG),
					 errmsg("executor host name is too long"),
					 errdetail("It may be at most %d bytes long.", NAMEDATALEN - 1)));
	}
	*pid = 0;
	if (!PG_ARGISNULL(7))
	{
		*pid = PG_GETARG_INT32(7);
		if (*pid <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("executor pid must be positive")));
	}
	if (*wait_ms > 0 && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("jobq.claim() with a wait needs the READ COMMITTED isolation level"),
				 errdetail("It must see the jobs committed while it waits.")));
}

/*
 * One pass of a claim, into rsinfo's tuplestore: returns how many jobs it
 * took, or -1 if another claim holds the lock of limited claims.  *wake
 * gets when to look again if it took nothing and waits (DT_NOEND: only
 * when woken).  Runs in loopcxt, which the caller resets.
 */
static int
claim_pass(ClaimArgs *args, ReturnSetInfo *rsinfo, bool may_wait, bool waiting,
		   MemoryContext loopcxt, TimestampTz *wake)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	int			n_got;

	MemoryContextSwitchTo(loopcxt);
	/*
	 * Changes committed since the last pass (a task registered again, an
	 * executor disallowed) count from this pass on, even in a transaction
	 * block that already holds its locks.
	 */
	AcceptInvalidationMessages();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());

	/*
	 * Leases that have ended are put back first, if it is time and no worker
	 * does it now: the executors do not depend on an idle worker.  Not by a
	 * claim that may go on to wait, nor by one in a transaction block (which
	 * may stay open, or be prepared), which would hold the jobs put back
	 * uncommitted: it wakes a worker instead.
	 */
	if (JobqLeaseExpiryTurn())
	{
		if (!may_wait && !IsTransactionBlock())
			(void) JobqExpireLeasesNow();
		else
			JobqLeaseSweepSoon();	/* a worker's turn, at once */
	}

	/*
	 * The claim in a subtransaction, undone when it took nothing or failed:
	 * an error leaves the caller's transaction as it was, and a claim that
	 * waits keeps nothing of a pass that took nothing.
	 */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(loopcxt);
	PG_TRY();
	{
		n_got = claim_jobs(args, args->n, rsinfo->setResult, rsinfo->setDesc);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(loopcxt);
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (claim_lock_held && pending_expiry == DT_NOEND)
			claim_lock_release();
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (n_got > 0)
		ReleaseCurrentSubTransaction();
	else
		RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(loopcxt);
	CurrentResourceOwner = oldowner;
	/* the lock of limited claims is taken: try again very soon */
	*wake = n_got < 0 ? TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5) :
		(n_got == 0 && waiting) ? claim_next_due(args) : DT_NOEND;
	PopActiveSnapshot();
	SPI_finish();
	MemoryContextSwitchTo(oldcxt);
	return n_got;
}

/*
 * Sleep until a commit wakes the claim (its latch), wake, the deadline,
 * the next look at the leases (once a second while one is overdue) or the
 * poll interval, whichever comes first.
 */
static void
claim_sleep(TimestampTz wake, TimestampTz deadline)
{
	TimestampTz now = GetCurrentTimestamp();
	long		secs;
	int			usecs;

	wake = Min(wake, deadline);
	wake = Min(wake, Max(JobqLeaseNextCheck(), TimestampTzPlusMilliseconds(now, 1000)));
	wake = Min(wake, TimestampTzPlusMilliseconds(now, jobq_poll_interval));
	TimestampDifference(now, wake, &secs, &usecs);
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 Max(secs * 1000 + (usecs + 999) / 1000, 1), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/*
 * jobq.claim(tasks text[], queues text[], n integer, lease interval,
 *			  executor text, wait interval, executor_host text,
 *			  executor_pid integer): the jobs claimed, as a set.
 */
Datum
jobq_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ClaimArgs	args;
	int64		wait_ms;
	char	   *host;
	int32		pid;
	TimestampTz deadline;
	TimestampTz lock_deadline;
	volatile bool waiting = false;
	volatile int got = 0;
	MemoryContext loopcxt;

	JobqLeaseRequireExecutors("jobq.claim()");
	claim_args_parse(fcinfo, &args, &wait_ms, &host, &pid);

	InitMaterializedSRF(fcinfo, 0);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
	/* the lock of limited claims is tried for at least a second */
	lock_deadline = Max(deadline, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000));
	/* what one pass of the loop allocates, freed by the next */
	loopcxt = AllocSetContextCreate(CurrentMemoryContext, "jobq claim",
									ALLOCSET_DEFAULT_SIZES);

	PG_ENSURE_ERROR_CLEANUP(claim_wait_cleanup, (Datum) 0);
	{
		for (;;)
		{
			TimestampTz wake;
			int			n_got;

			CHECK_FOR_INTERRUPTS();
			MemoryContextReset(loopcxt);
			n_got = claim_pass(&args, rsinfo, wait_ms > 0, waiting, loopcxt, &wake);
			got = Max(n_got, 0);
			if (n_got < 0 && GetCurrentTimestamp() < lock_deadline)
			{
				/* not a wait for a job: no registration, no deadline */
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 5, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
				continue;
			}
			if (got > 0 || GetCurrentTimestamp() >= deadline)
				break;
			if (!waiting)
			{
				/* register, then look once more: no commit goes unseen */
				JobqClaimWaitBegin();
				waiting = true;
				continue;
			}
			claim_sleep(wake, deadline);
		}
	}
	PG_END_ENSURE_ERROR_CLEANUP(claim_wait_cleanup, (Datum) 0);
	JobqClaimWaitEnd();

	JobqExecutorNote(args.executor_name, JOBQ_EXEC_CLAIMED, got, host, pid);
	return (Datum) 0;
}
