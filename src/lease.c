/*-------------------------------------------------------------------------
 *
 * lease.c
 *		External executors: jobq.claim() and the lease it gives, the calls
 *		that keep and end a lease, and the expiry of leases.
 *
 * A job of an external task (task.c) is run by a process outside the
 * server, which cannot hold a transaction open for the length of a job.
 * So its claim, unlike a worker's (claim.c), is written and committed:
 * the attempt is counted, and the job gets a lease, a random token and an
 * expiry, in jobq.job (the token's digest only).  The executor keeps the
 * lease with jobq.heartbeat() and ends it with jobq.complete(),
 * jobq.fail() or jobq.release(); each names the job by id and token, locks
 * its row and checks the token under that lock, so exactly one outcome
 * counts per attempt: a call after the lease was lost (it expired and the
 * job was put back or taken again, the job was cancelled, or it already
 * ended) changes nothing and fails with SQLSTATE JQ001.  These calls wait
 * for another transaction's lock on the row only briefly (a heartbeat not
 * at all): no session can stall an executor.  The outcomes go through
 * finish.c like the workers'.
 *
 * The claim is written without an SQL statement (store.c): it walks the
 * external claim index, locks each job it takes without waiting and
 * without following the row's update chain, and updates it.  A job that
 * another transaction holds, or changed since the snapshot, is passed over
 * and left untouched; FOR UPDATE SKIP LOCKED would follow the chain
 * (EvalPlanQual) and lock, to the end of the transaction, rows that other
 * claims took since the snapshot.  Each pass of a claim runs in a
 * subtransaction, so that an error leaves the caller's transaction as it
 * was, undone when it took nothing.
 *
 * The claim index is consumed from its head, and each claimed job leaves
 * a dead entry there until vacuum (or, under a long transaction, for as
 * long as it lasts).  So claims start at floors, as the workers' do
 * (floors.c keeps a second set for this index; claim_jobs() says how it
 * is kept safe).
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
 * Limits.  A claim honours paused queues, queue concurrency and per-role
 * max_running, counting both the workers' jobs (slots.c) and the leases
 * held.  While one of those limits could be reached by the claim, the
 * claims of external executors are serialized by a session lock, which is
 * only ever tried, and take jobs one at a time; otherwise one statement
 * claims them all.
 *
 * Executors are known by the name they give jobq.claim(); shared memory
 * keeps, per name, where it runs (as it reports) and what it did, for the
 * view jobq.executors.
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

PG_FUNCTION_INFO_V1(jobq_claim);
PG_FUNCTION_INFO_V1(jobq_heartbeat);
PG_FUNCTION_INFO_V1(jobq_complete);
PG_FUNCTION_INFO_V1(jobq_complete_many);
PG_FUNCTION_INFO_V1(jobq_fail);
PG_FUNCTION_INFO_V1(jobq_release);

/* the lock of limited claims: "jobq" in ASCII, a field4 of ours */
#define JOBQ_CLAIM_LOCK_KEY		0x6A6F6271
#define JOBQ_CLAIM_LOCK_FIELD4	0x4A53

/* the longest wait of a lease call for another transaction's row lock */
#define JOBQ_LEASE_LOCK_WAIT_MS	"500"
/* at most one expiry sweep per this many milliseconds */
#define JOBQ_SWEEP_INTERVAL_MS	100
/* jobs put back per sweep transaction */
#define JOBQ_SWEEP_BATCH		1000
/* the longest lease, and the longest wait of a claim */
#define JOBQ_MAX_LEASE_MS		((int64) 7 * 24 * 3600 * 1000)

typedef struct JobqLeaseState
{
	pg_atomic_uint64 next_expiry;	/* earliest expiry a lease may have */
	pg_atomic_uint64 sweep_after;	/* no sweep before then */
	pg_atomic_uint32 leases_seen;	/* a lease was committed since start */
} JobqLeaseState;

static JobqLeaseState *Lease = NULL;

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

static SPIPlanPtr heartbeat_plan = NULL;
static SPIPlanPtr levels_plan = NULL;
static SPIPlanPtr expired_plan = NULL;
static SPIPlanPtr min_expiry_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr leased_plan = NULL;
static SPIPlanPtr release_plan = NULL;
static uint64 plans_generation = 0;

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

/* the priority levels of claimable external jobs, by a skip scan */
static const char *levels_sql =
"WITH RECURSIVE l(p) AS ("
"  (SELECT priority FROM jobq.job WHERE external AND lease_token IS NULL"
"    ORDER BY priority DESC LIMIT 1)"
"  UNION ALL"
"  SELECT (SELECT priority FROM jobq.job WHERE external AND lease_token IS NULL"
"            AND priority OPERATOR(pg_catalog.<) l.p"
"           ORDER BY priority DESC LIMIT 1)"
"    FROM l WHERE l.p IS NOT NULL"
")"
"SELECT p FROM l WHERE p IS NOT NULL LIMIT $1";

/* leases that ended before $1, the earliest first */
static const char *expired_sql =
"SELECT ctid, id, priority, run_at, attempts, max_attempts, executor FROM jobq.job"
" WHERE lease_token IS NOT NULL AND lease_expires_at OPERATOR(pg_catalog.<=) $1"
" ORDER BY lease_expires_at"
" LIMIT $2"
"   FOR UPDATE SKIP LOCKED";

static const char *min_expiry_sql =
"SELECT pg_catalog.min(lease_expires_at) FROM jobq.job WHERE lease_token IS NOT NULL";

/* when a job that claim $1.. may take is due next (see the claim) */
static const char *next_due_sql =
"SELECT pg_catalog.min(run_at) FROM jobq.job"
" WHERE external AND lease_token IS NULL"
"   AND run_at OPERATOR(pg_catalog.>) $1"
"   AND ($2 OR task OPERATOR(pg_catalog.=) ANY ($3))"
"   AND ($4 OR queue OPERATOR(pg_catalog.=) ANY ($5))";

/* the leases held in queues $1 or of owners $2 */
static const char *leased_sql =
"SELECT queue, owner::pg_catalog.oid FROM jobq.job"
" WHERE lease_token IS NOT NULL"
"   AND (queue OPERATOR(pg_catalog.=) ANY ($1)"
"        OR owner::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($2))";

/* hand job $1, locked, back unrun: its attempt is not counted */
static const char *release_sql =
"UPDATE jobq.job SET attempts = attempts OPERATOR(pg_catalog.-) 1,"
"       lease_token = NULL, lease_expires_at = NULL"
" WHERE id OPERATOR(pg_catalog.=) $1";

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
 * After the commit of a claim: its leases end by pending_expiry, which
 * the workers must know of (and, if they sleep longer, one is woken).
 * At the commit, not before: a sweep that began earlier and did not see
 * the claim reads the earliest expiry before this lowers it.
 */
static void
lease_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_PREPARE && pending_expiry != DT_NOEND)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that has claimed jobs of external tasks"),
				 errdetail("A lease must be committed to count.")));
	if (event == XACT_EVENT_COMMIT && pending_expiry != DT_NOEND && Lease)
	{
		pg_atomic_write_u32(&Lease->leases_seen, 1);
		note_expiry(pending_expiry);
		JobqWakeWorkerBy(pending_expiry);
	}
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
lease_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
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
		RegisterSubXactCallback(lease_subxact_callback, NULL);
		RegisterXactCallback(lease_xact_callback, NULL);
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

/*
 * The kept statement *plan, prepared again after the schema changed.
 * Needs SPI.
 */
static SPIPlanPtr
lease_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	const JobqSchema *schema = JobqSchemaGet();

	if (plans_generation != schema->generation)
	{
		SPIPlanPtr *plans[] = {&heartbeat_plan, &levels_plan,
		&expired_plan, &min_expiry_plan, &next_due_plan, &leased_plan,
		&release_plan};
		int			i;

		for (i = 0; i < lengthof(plans); i++)
			if (*plans[i] != NULL)
			{
				SPI_freeplan(*plans[i]);
				*plans[i] = NULL;
			}
		plans_generation = schema->generation;
	}
	return JobqKeepPlan(plan, sql, nargs, argtypes);
}

/*
 * The start of every executor call that writes: jobq preloaded, a
 * read-write transaction, and a schema with external executors (0.5.0).
 */
static void
require_executors(const char *what)
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
static int64
positive_interval_ms(Interval *iv, const char *what, bool zero_ok)
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

/* one more job held in queue, of owner: count it against their limits */
static void
count_held(JobqQueueRule *rules, int nrules, int *queue_held,
		   JobqRoleLimit *limits, int nlimits, int *role_held,
		   const char *queue, Oid owner)
{
	int			i;

	for (i = 0; i < nrules; i++)
		if (strcmp(rules[i].queue, queue) == 0)
			queue_held[i]++;
	for (i = 0; i < nlimits; i++)
		if (limits[i].role == owner)
			role_held[i]++;
}

/*
 * Count the leases held in the queues and by the roles that have a limit
 * (queue_held[i] for rules[i], role_held[i] for limits[i]).  Needs SPI
 * and an active snapshot.
 */
static void
count_leases(JobqQueueRule *rules, int nrules, int *queue_held,
			 JobqRoleLimit *limits, int nlimits, int *role_held)
{
	Datum	   *queues = palloc(sizeof(Datum) * Max(nrules, 1));
	Datum	   *roles = palloc(sizeof(Datum) * Max(nlimits, 1));
	Oid			argtypes[2] = {TEXTARRAYOID, OIDARRAYOID};
	Datum		values[2];
	uint64		r;
	int			i;

	memset(queue_held, 0, sizeof(int) * nrules);
	memset(role_held, 0, sizeof(int) * nlimits);
	for (i = 0; i < nrules; i++)
		queues[i] = CStringGetTextDatum(rules[i].queue);
	for (i = 0; i < nlimits; i++)
		roles[i] = ObjectIdGetDatum(limits[i].role);
	values[0] = PointerGetDatum(construct_array(queues, nrules, TEXTOID, -1,
												false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(roles, nlimits, OIDOID,
												sizeof(Oid), true, TYPALIGN_INT));
	if (JobqExecuteKeptAsOwner(lease_plan(&leased_plan, leased_sql, 2, argtypes),
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

		count_held(rules, nrules, queue_held, limits, nlimits, role_held, queue, owner);
	}
}

/*
 * The workers' claim (claim.c): how many leases are held in queue, and by
 * jobs of owner, when leases may exist.  Needs SPI and an active snapshot.
 */
void
JobqLeasesHeld(JobqQueueRule *rules, int nrules, int *queue_held,
			   JobqRoleLimit *limits, int nlimits, int *role_held)
{
	if (!JobqSchemaGet()->executors ||
		pg_atomic_read_u32(&Lease->leases_seen) == 0)
	{
		memset(queue_held, 0, sizeof(int) * nrules);
		memset(role_held, 0, sizeof(int) * nlimits);
		return;
	}
	count_leases(rules, nrules, queue_held, limits, nlimits, role_held);
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

/*
 * The columns of jobq.job that the claim reads and writes, by name; their
 * numbers follow the table's description (job_table).
 */
typedef enum JobColumn
{
	JC_ID,
	JC_QUEUE,
	JC_PRIORITY,
	JC_RUN_AT,
	JC_ATTEMPTS,
	JC_MAX_ATTEMPTS,
	JC_TIMEOUT,
	JC_OWNER,
	JC_CREATED_AT,
	JC_STARTED_AT,
	JC_TASK,
	JC_PAYLOAD,
	JC_EXTERNAL,
	JC_EXECUTOR,
	JC_LEASE_TOKEN,
	JC_LEASE_EXPIRES_AT,
	JC_NUM
} JobColumn;

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

static JobqTable job_table = {.relname = "job"};
static AttrNumber job_attno[JC_NUM];
static uint64 job_columns_generation = 0;
/* the columns that a claim changes, and their attribute numbers */
static const JobColumn claim_writes[] = {
	JC_ATTEMPTS, JC_STARTED_AT, JC_EXECUTOR, JC_LEASE_TOKEN, JC_LEASE_EXPIRES_AT
};
static Bitmapset *claim_changed = NULL;

/* value and null flag of column c in slot (all attributes deformed) */
#define JOB_VALUE(slot, c) ((slot)->tts_values[job_attno[c] - 1])
#define JOB_ISNULL(slot, c) ((slot)->tts_isnull[job_attno[c] - 1])

/*
 * Open jobq.job for writing (RowExclusiveLock), its column numbers known.
 */
static Relation
open_job_table(void)
{
	Relation	rel = JobqTableOpen(&job_table);
	MemoryContext oldcxt;
	int			i;

	if (job_columns_generation != job_table.generation)
	{
		for (i = 0; i < JC_NUM; i++)
			job_attno[i] = JobqTableColumn(&job_table, job_columns[i].name,
										   job_columns[i].type, true);
		bms_free(claim_changed);
		claim_changed = NULL;
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		for (i = 0; i < lengthof(claim_writes); i++)
			claim_changed = bms_add_member(claim_changed, job_attno[claim_writes[i]]);
		MemoryContextSwitchTo(oldcxt);
		job_columns_generation = job_table.generation;
	}
	return rel;
}

/* open an index of jobq.job for a scan (AccessShareLock) */
static Relation
open_job_index(JobqRel which)
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
static void
token_digest(const pg_uuid_t *token, pg_uuid_t *digest)
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
static void
new_token(pg_uuid_t *token, pg_uuid_t *digest)
{
	if (!pg_strong_random(token->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random lease token")));
	/* a version 4 (random) UUID, as gen_random_uuid() makes */
	token->data[6] = (token->data[6] & 0x0f) | 0x40;
	token->data[8] = (token->data[8] & 0x3f) | 0x80;
	token_digest(token, digest);
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
	JobqQueueRule *rules;
	int			nrules;
	int		   *queue_held;
	JobqRoleLimit *limits;
	int			nlimits;
	int		   *role_held;
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
	bool		blocked = false;
	TM_FailureData tmfd;
	TM_Result	result;
	Datum		row[13];
	bool		nulls[13];
	int			i;

	/* the version seen may be newer than the index entry */
	if (JOB_ISNULL(slot, JC_EXTERNAL) || !DatumGetBool(JOB_VALUE(slot, JC_EXTERNAL)) ||
		!JOB_ISNULL(slot, JC_LEASE_TOKEN) || JOB_ISNULL(slot, JC_TASK))
		return SEEN_GONE;
	task = TextDatumGetCString(JOB_VALUE(slot, JC_TASK));
	queue = TextDatumGetCString(JOB_VALUE(slot, JC_QUEUE));
	owner = DatumGetObjectId(JOB_VALUE(slot, JC_OWNER));
	for (i = 0; i < run->nrules && !blocked; i++)
		if (strcmp(run->rules[i].queue, queue) == 0)
			blocked = run->rules[i].paused ||
				(run->rules[i].concurrency > 0 &&
				 run->queue_held[i] >= run->rules[i].concurrency);
	for (i = 0; i < run->nlimits && !blocked; i++)
		if (run->limits[i].role == owner)
			blocked = run->limits[i].max_running >= 0 &&
				run->role_held[i] >= run->limits[i].max_running;
	if (blocked || DatumGetTimestampTz(JOB_VALUE(slot, JC_RUN_AT)) > run->now ||
		(!args->any_task && !name_in(task, args->task_names, args->ntasks)) ||
		!claims_queue(args, queue) || !JobqTaskServes(task, GetUserId()))
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
	new_token(token, digest);
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
	result = JobqTableUpdate(&job_table, run->rel, &slot->tts_tid, newslot,
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
		count_held(run->rules, run->nrules, run->queue_held, run->limits,
				   run->nlimits, run->role_held, queue, owner);
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
		key.run_at = DatumGetTimestampTz(slot_getattr(run->slot, job_attno[JC_RUN_AT],
													  &isnull));
		key.id = DatumGetInt64(slot_getattr(run->slot, job_attno[JC_ID], &isnull));
		*raise_to = key;
		seen = true;
		stopped = (what == SEEN_CLAIMABLE);
	}
	index_endscan(scan);
	return seen;
}

/* the priority levels of the external claim index for its floors, if due */
static void
discover_levels(void)
{
	Oid			argtypes[1] = {INT4OID};

	if (JobqFloorsRediscoveryDue(JOBQ_FLOORS_EXECUTORS))
		JobqFloorsDiscover(JOBQ_FLOORS_EXECUTORS,
						   lease_plan(&levels_plan, levels_sql, 1, argtypes));
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
	run.rules = JobqQueueRules(&run.nrules);
	run.limits = JobqRoleLimits(&run.nlimits);
	run.queue_held = palloc0(sizeof(int) * Max(run.nrules, 1));
	run.role_held = palloc0(sizeof(int) * Max(run.nlimits, 1));
	run.tupstore = tupstore;
	run.tupdesc = tupdesc;

	/*
	 * With a limit that this claim could reach (of a queue it may claim
	 * from, or of any role), claims are serialized, and count as they go.
	 */
	for (i = 0; i < run.nrules; i++)
		if (!run.rules[i].paused && run.rules[i].concurrency > 0 &&
			claims_queue(args, run.rules[i].queue))
			run.capped = true;
	for (i = 0; i < run.nlimits; i++)
		if (run.limits[i].max_running >= 0)
			run.capped = true;
	if (run.capped)
	{
		if (!claim_lock_acquire())
			return -1;
		count_leases(run.rules, run.nrules, run.queue_held, run.limits,
					 run.nlimits, run.role_held);
		for (i = 0; i < run.nrules; i++)
			run.queue_held[i] += JobqQueueRunning(run.rules[i].queue);
		for (i = 0; i < run.nlimits; i++)
			run.role_held[i] += JobqOwnerRunning(run.limits[i].role);
	}

	run.rel = open_job_table();
	run.index = open_job_index(JOBQ_REL_EXTERNAL_IDX);
	run.slot = table_slot_create(run.rel, NULL);
	run.newslot = JobqTableSlot(&job_table);
	run.rowcxt = AllocSetContextCreate(CurrentMemoryContext, "jobq claim row",
									   ALLOCSET_DEFAULT_SIZES);

	if (!IsolationUsesXactSnapshot())
		discover_levels();
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
	if (JobqExecuteKeptAsOwner(lease_plan(&next_due_plan, next_due_sql, 5, argtypes),
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
 * jobq.claim(tasks text[], queues text[], n integer, lease interval,
 *			  executor text, wait interval, executor_host text,
 *			  executor_pid integer): the jobs claimed, as a set.
 */
Datum
jobq_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ClaimArgs	args;
	int32		n;
	int64		wait_ms;
	char	   *volatile host = NULL;
	volatile int32 pid = 0;
	TimestampTz deadline;
	volatile bool waiting = false;
	volatile int got = 0;
	TimestampTz lock_deadline;
	MemoryContext loopcxt;

	require_executors("jobq.claim()");

	memset(&args, 0, sizeof(args));
	args.any_task = PG_ARGISNULL(0);
	if (args.any_task)
		args.tasks = empty_array(TEXTOID);
	else
	{
		args.tasks = PG_GETARG_DATUM(0);
		args.task_names = check_names(PG_GETARG_ARRAYTYPE_P(0), "tasks",
									  NAMEDATALEN - 1, &args.ntasks);
	}
	args.any_queue = PG_ARGISNULL(1);
	if (args.any_queue)
		args.queues = empty_array(TEXTOID);
	else
	{
		args.queues = PG_GETARG_DATUM(1);
		args.queue_names = check_names(PG_GETARG_ARRAYTYPE_P(1), "queues",
									   JOBQ_MAX_QUEUE_NAME, &args.nqueues);
	}
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("n must not be null")));
	n = PG_GETARG_INT32(2);
	if (n < 1 || n > JOBQ_MAX_CLAIM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("n must be between 1 and %d, not %d", JOBQ_MAX_CLAIM, n)));
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lease must not be null")));
	args.lease_ms = positive_interval_ms(PG_GETARG_INTERVAL_P(3), "lease", false);
	if (PG_ARGISNULL(4))
	{
		/* the session's application_name, or its process */
		if (application_name != NULL && application_name[0] != '\0')
			args.executor_name = pstrdup(application_name);
		else
			args.executor_name = psprintf("backend %d", MyProcPid);
	}
	else
	{
		args.executor_name = text_to_cstring(PG_GETARG_TEXT_PP(4));
		if (args.executor_name[0] == '\0' ||
			strlen(args.executor_name) > NAMEDATALEN - 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("executor name must be 1 to %d bytes long", NAMEDATALEN - 1)));
	}
	args.executor = CStringGetTextDatum(args.executor_name);
	if (PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("wait must not be null"),
				 errhint("Omit the wait argument, or pass 0, not to wait.")));
	wait_ms = positive_interval_ms(PG_GETARG_INTERVAL_P(5), "wait", true);
	if (!PG_ARGISNULL(6))
	{
		host = text_to_cstring(PG_GETARG_TEXT_PP(6));
		if (strlen(host) > NAMEDATALEN - 1)
			ereport(ERROR,
					(errcode(ERRCODE_NAME_TOO_LONG),
					 errmsg("executor host name is too long"),
					 errdetail("It may be at most %d bytes long.", NAMEDATALEN - 1)));
	}
	if (!PG_ARGISNULL(7))
	{
		pid = PG_GETARG_INT32(7);
		if (pid <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("executor pid must be positive")));
	}
	if (wait_ms > 0 && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("jobq.claim() with a wait needs the READ COMMITTED isolation level"),
				 errdetail("It must see the jobs committed while it waits.")));

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
			TimestampTz now;
			TimestampTz wake;
			long		secs;
			int			usecs;

			MemoryContext oldcxt = CurrentMemoryContext;
			ResourceOwner oldowner = CurrentResourceOwner;
			int			n_got;

			CHECK_FOR_INTERRUPTS();
			MemoryContextReset(loopcxt);
			MemoryContextSwitchTo(loopcxt);
			SPI_connect();
			PushActiveSnapshot(GetTransactionSnapshot());

			/*
			 * Leases that have ended are put back first, if it is time and no
			 * worker does it now: the executors do not depend on an idle
			 * worker.  Not by a claim that may go on to wait, nor by one in a
			 * transaction block (which may stay open, or be prepared), which
			 * would hold the jobs put back uncommitted: it wakes a worker
			 * instead.
			 */
			if (JobqLeaseExpiryTurn())
			{
				if (wait_ms == 0 && !IsTransactionBlock())
					(void) JobqExpireLeasesNow();
				else
				{
					/* let a worker have the turn at once */
					pg_atomic_write_u64(&Lease->sweep_after, 0);
					JobqWakeWorkerBy(GetCurrentTimestamp());
				}
			}

			/*
			 * The claim in a subtransaction, undone when it took nothing or
			 * failed: an error leaves the caller's transaction as it was, and
			 * a claim that waits keeps nothing of a pass that took nothing.
			 */
			BeginInternalSubTransaction(NULL);
			MemoryContextSwitchTo(loopcxt);
			PG_TRY();
			{
				n_got = claim_jobs(&args, n, rsinfo->setResult, rsinfo->setDesc);
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
			got = Max(n_got, 0);
			/* the lock of limited claims is taken: try again very soon */
			wake = n_got < 0 ? TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5) :
				(got == 0 && waiting) ? claim_next_due(&args) : DT_NOEND;
			PopActiveSnapshot();
			SPI_finish();
			MemoryContextSwitchTo(oldcxt);
			if (n_got < 0 && GetCurrentTimestamp() < lock_deadline)
			{
				/* not a wait for a job: no registration, no deadline */
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 5, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
				continue;
			}

			now = GetCurrentTimestamp();
			if (got > 0 || now >= deadline)
				break;
			if (!waiting)
			{
				/* register, then look once more: no commit goes unseen */
				JobqClaimWaitBegin();
				waiting = true;
				continue;
			}
			/* until a commit wakes us, a job is due, the wait ends, or the poll */
			wake = Min(wake, deadline);
			/* and when leases end (once a second while one is overdue) */
			wake = Min(wake, Max(JobqLeaseNextCheck(),
								 TimestampTzPlusMilliseconds(now, 1000)));
			wake = Min(wake, TimestampTzPlusMilliseconds(now, jobq_poll_interval));
			TimestampDifference(now, wake, &secs, &usecs);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Max(secs * 1000 + (usecs + 999) / 1000, 1),
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
	PG_END_ENSURE_ERROR_CLEANUP(claim_wait_cleanup, (Datum) 0);
	JobqClaimWaitEnd();

	JobqExecutorNote(args.executor_name, JOBQ_EXEC_CLAIMED, got, host, pid);
	return (Datum) 0;
}

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
	token_digest(token, &digest);
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
	if (state[0] != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_JOBQ_LEASE_LOST),
				 errmsg("lease of job " INT64_FORMAT " is not held", id),
				 errdetail("The job has already finished: it %s.", state),
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
	require_executors(what);
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
	extend_ms = positive_interval_ms(PG_GETARG_INTERVAL_P(2), "extend", false);

	values[0] = Int64GetDatum(id);
	values[1] = UUIDPGetDatum(token);
	values[2] = TimestampTzGetDatum(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																extend_ms));
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (JobqExecuteKeptAsOwner(lease_plan(&heartbeat_plan, heartbeat_sql, 3, argtypes),
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
	Datum		d = slot_getattr(slot, job_attno[JC_LEASE_TOKEN], &isnull);

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
 * executors[i] its executor (in TopTransactionContext) and held[i] true;
 * the caller says why the others are not (lease_lost()).  Needs an active
 * snapshot.
 *
 * The token is checked on the version the snapshot sees, then on the
 * newest version, once locked (a heartbeat may have moved the expiry
 * since, or the expiry put the job back).
 */
static void
lock_leases(int n, const int64 *ids, pg_uuid_t *const *tokens, JobqJob *jobs,
			char **executors, bool *held)
{
	Relation	rel = open_job_table();
	Relation	pkey = open_job_index(JOBQ_REL_JOB_PKEY);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	int		   *order = palloc(sizeof(int) * Max(n, 1));
	int			nestlevel = NewGUCNestLevel();
	IndexScanDesc scan;
	Snapshot	snapshot;
	CommandId	cid;
	int			k;

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
		held[i] = false;
		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(ids[i]));
		index_rescan(scan, &key, 1, NULL, 0);
		if (!index_getnext_slot(scan, ForwardScanDirection, slot))
			continue;
		token_digest(tokens[i], &digest);
		if (!lease_matches(slot, &digest))
			continue;
		tid = slot->tts_tid;
		if (table_tuple_lock(rel, &tid, snapshot, slot, cid, LockTupleExclusive,
							 LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
							 &tmfd) != TM_Ok ||
			!lease_matches(slot, &digest))
			continue;

		slot_getallattrs(slot);
		memset(&jobs[i], 0, sizeof(JobqJob));
		jobs[i].id = ids[i];
		jobs[i].tid = slot->tts_tid;
		jobs[i].priority = DatumGetInt16(JOB_VALUE(slot, JC_PRIORITY));
		jobs[i].run_at = DatumGetTimestampTz(JOB_VALUE(slot, JC_RUN_AT));
		jobs[i].attempts = DatumGetInt32(JOB_VALUE(slot, JC_ATTEMPTS));
		jobs[i].max_attempts = DatumGetInt32(JOB_VALUE(slot, JC_MAX_ATTEMPTS));
		jobs[i].external = true;
		d = slot_getattr(slot, job_attno[JC_EXECUTOR], &isnull);
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

	lock_leases(1, &id, &token, job, executor, &held);
	if (!held)
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
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	require_executors("jobq.complete()");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job ids and lease tokens must not be null")));
	if (ARR_NDIM(PG_GETARG_ARRAYTYPE_P(0)) > 1 || ARR_NDIM(PG_GETARG_ARRAYTYPE_P(1)) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("job ids and lease tokens must be one-dimensional arrays")));
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), INT8OID, 8, FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &ids, &id_nulls, &n);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), UUIDOID, UUID_LEN, false,
					  TYPALIGN_CHAR, &tokens, &token_nulls, &ntokens);
	if (!PG_ARGISNULL(2))
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), JSONBOID, -1, false,
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
	lock_leases(n, job_ids, job_tokens, jobs, executors, locked);
	for (i = 0; i < n; i++)
		jobs[i].attempts = -1;	/* as it is */
	/* all or nothing: the first whose lease is not held says why */
	for (i = 0; i < n; i++)
		if (!locked[i])
			(void) lease_lost(DatumGetInt64(ids[i]), DatumGetUUIDP(tokens[i]), false);
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
		retry_ms = positive_interval_ms(PG_GETARG_INTERVAL_P(3), "retry_in", true);
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
	if (JobqExecuteKeptAsOwner(lease_plan(&release_plan, release_sql, 1, argtypes),
							   values) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "could not release jobq job " INT64_FORMAT, id);
	PopActiveSnapshot();
	SPI_finish();
	JobqNoteEnqueue(job.run_at, job.priority, id, true);
	JobqExecutorNote(executor, JOBQ_EXEC_SEEN, 0, NULL, 0);
	PG_RETURN_VOID();
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
	if (JobqExecuteKeptAsOwner(lease_plan(&expired_plan, expired_sql, 2, argtypes),
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
			if (JobqExecuteKeptAsOwner(lease_plan(&min_expiry_plan, min_expiry_sql, 0, NULL),
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
