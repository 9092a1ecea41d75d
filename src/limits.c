/*-------------------------------------------------------------------------
 *
 * limits.c
 *		Per-role limits: how many unfinished jobs a role may have, and how
 *		many of its jobs may run at once.
 *
 * The administrator sets them with jobq.configure_role(), rows of
 * jobq.role_limits; a role without a row has no limit.  Every backend
 * keeps the rows in a small cache, read again after a relcache
 * invalidation of the table, which jobq.configure_role() sends with its
 * commit.
 *
 * max_pending is checked at enqueue; the jobs enqueued while a role has
 * that limit are marked (jobq.job.counted) and indexed by owner, and only
 * they count: the jobs of unlimited roles pay nothing for the index.  So
 * that concurrent transactions of
 * one role cannot each see room for the same last job, the enqueues of a
 * limited role take a lock of their own (a heavyweight lock on a tag keyed
 * by the role, held to the end of the transaction): they are serialized,
 * the enqueues of other roles are not.  The count of a role's unfinished
 * jobs is read once per transaction (an index scan of jobq.job by owner,
 * stopped at the limit) and then kept up to date by the transaction's own
 * enqueues.  A role whose limit is reached gets SQLSTATE 53400 and
 * nothing is written.
 *
 * max_running is checked by the workers: the claim skips the jobs of
 * roles that run as many jobs as they may (claim.c), and a worker starts
 * a job only if its role has room, counted under the lock of the worker
 * slots (slots.c).
 *
 * IDENTIFICATION
 *		src/limits.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "jobq.h"
#include "lease.h"
#include "slots.h"
#include "wakeup.h"

PG_FUNCTION_INFO_V1(jobq_configure_role);

/* the lock of a limited role's enqueues: "jobq" in ASCII, a field4 of ours */
#define JOBQ_ROLE_LOCK_KEY		0x6A6F6271
#define JOBQ_ROLE_LOCK_FIELD4	0x4A52

static JobqTableCopy limits_copy = {.relname = "role_limits"};

/* the count of a role's unfinished jobs, as of this transaction */
static Oid	counted_role = InvalidOid;
static LocalTransactionId counted_lxid = InvalidLocalTransactionId;
static int64 counted_pending = 0;

/* a row of jobq.role_limits */
static void
fill_limit(void *elem, HeapTuple tup, TupleDesc desc)
{
	JobqRoleLimit *limit = (JobqRoleLimit *) elem;
	bool		isnull;

	limit->role = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
	limit->max_pending = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	limit->max_running = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
}

/*
 * The roles that have a limit, read again after a change.  Needs a
 * transaction and an active snapshot.  *n is 0 with none (and with the
 * tables of a version before 0.4.0).
 */
JobqRoleLimit *
JobqRoleLimits(int *n)
{
	return JobqTableCopyLoad(&limits_copy,
							 "SELECT role::pg_catalog.oid,"
							 "       COALESCE(max_pending, -1), COALESCE(max_running, -1)"
							 "  FROM jobq.role_limits"
							 " WHERE max_pending IS NOT NULL OR max_running IS NOT NULL"
							 " LIMIT 10000",
							 sizeof(JobqRoleLimit), fill_limit, n);
}

/* the limits of role, or NULL if it has none */
static const JobqRoleLimit *
role_limit(Oid role)
{
	int			n;
	JobqRoleLimit *all = JobqRoleLimits(&n);
	int			i;

	for (i = 0; i < n; i++)
		if (all[i].role == role)
			return &all[i];
	return NULL;
}

/*
 * Begin a tally of the limits for a claim: the queue settings and role
 * limits (read again after a change), nothing counted yet.  Needs a
 * transaction and an active snapshot, and SPI not connected.
 */
void
JobqLimitsRead(JobqLimitTally *t)
{
	t->rules = JobqQueueRules(&t->nrules);
	t->roles = JobqRoleLimits(&t->nroles);
	t->queue_held = palloc0(sizeof(int) * Max(t->nrules, 1));
	t->role_held = palloc0(sizeof(int) * Max(t->nroles, 1));
}

/*
 * Could a limit stop the claim: a concurrency limit of a queue it takes
 * jobs of (claims_queue NULL: any queue), or any role's max_running?  Only
 * then must it count what is held, and count as it takes.
 */
bool
JobqLimitsMayBind(const JobqLimitTally *t,
				  bool (*claims_queue) (const char *queue, void *arg), void *arg)
{
	int			i;

	for (i = 0; i < t->nrules; i++)
		if (!t->rules[i].paused && t->rules[i].concurrency > 0 &&
			(claims_queue == NULL || claims_queue(t->rules[i].queue, arg)))
			return true;
	for (i = 0; i < t->nroles; i++)
		if (t->roles[i].max_running >= 0)
			return true;
	return false;
}

/*
 * Count the jobs held now against each limit: those the workers run
 * (slots.c) and those leased to executors (lease.c).  Needs SPI and an
 * active snapshot.
 */
void
JobqLimitsCountHeld(JobqLimitTally *t)
{
	int			i;

	JobqLeasesHeld(t);
	for (i = 0; i < t->nrules; i++)
		t->queue_held[i] += JobqQueueRunning(t->rules[i].queue);
	for (i = 0; i < t->nroles; i++)
		t->role_held[i] += JobqOwnerRunning(t->roles[i].role);
}

/* may no job of the queue of rules[rule] start now: paused, or full? */
bool
JobqLimitsQueueBlocked(const JobqLimitTally *t, int rule)
{
	const JobqQueueRule *r = &t->rules[rule];

	return r->paused || (r->concurrency > 0 && t->queue_held[rule] >= r->concurrency);
}

/* may no job of the role of roles[role] start now? */
bool
JobqLimitsRoleBlocked(const JobqLimitTally *t, int role)
{
	return t->roles[role].max_running >= 0 &&
		t->role_held[role] >= t->roles[role].max_running;
}

/* may a job of owner in queue not start now? */
bool
JobqLimitsBlock(const JobqLimitTally *t, const char *queue, Oid owner)
{
	int			i;

	for (i = 0; i < t->nrules; i++)
		if (strcmp(t->rules[i].queue, queue) == 0 && JobqLimitsQueueBlocked(t, i))
			return true;
	for (i = 0; i < t->nroles; i++)
		if (t->roles[i].role == owner && JobqLimitsRoleBlocked(t, i))
			return true;
	return false;
}

/* one more job of owner held in queue: count it against their limits */
void
JobqLimitsTake(JobqLimitTally *t, const char *queue, Oid owner)
{
	int			i;

	for (i = 0; i < t->nrules; i++)
		if (strcmp(t->rules[i].queue, queue) == 0)
			t->queue_held[i]++;
	for (i = 0; i < t->nroles; i++)
		if (t->roles[i].role == owner)
			t->role_held[i]++;
}

/* how many jobs of role may run at once; -1 for no limit */
int
JobqRoleRunningLimit(Oid role)
{
	JobqRoleLimit *limits = limits_copy.rows;
	int			i;

	/* the worker's copy, read by its claim in the same transaction */
	for (i = 0; i < limits_copy.nrows; i++)
		if (limits[i].role == role)
			return limits[i].max_running;
	return -1;
}

/*
 * An enqueue by role is about to add a job: an error if the role has as
 * many unfinished jobs as it may.  True if the role has a max_pending
 * limit: the job is then marked as counted (jobq.job.counted).  Call
 * JobqRoleEnqueued() once the job is in.
 */
bool
JobqRoleCheckEnqueue(Oid role)
{
	const JobqRoleLimit *lim = role_limit(role);
	LOCKTAG		tag;

	if (lim == NULL || lim->max_pending < 0)
		return false;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, JOBQ_ROLE_LOCK_KEY, (uint32) role,
						 JOBQ_ROLE_LOCK_FIELD4);

	/*
	 * The count kept for this transaction holds while the lock has been
	 * held since: a subtransaction that took it and aborted let it go, and
	 * others may have enqueued meanwhile.
	 */
	if (LockAcquire(&tag, ExclusiveLock, false, false) != LOCKACQUIRE_ALREADY_HELD ||
		counted_role != role || counted_lxid != MyProc->lxid)
	{
		Oid			argtypes[2] = {OIDOID, INT4OID};
		Datum		values[2];
		bool		isnull;

		values[0] = ObjectIdGetDatum(role);
		values[1] = Int32GetDatum(lim->max_pending);

		/*
		 * Counted with a snapshot taken now, after the lock: a repeatable
		 * read transaction's own snapshot would miss the jobs that others
		 * of the role committed since it began.
		 */
		PushActiveSnapshot(GetLatestSnapshot());
		if (JobqExecuteAsOwner("SELECT pg_catalog.count(*) FROM"
							   " (SELECT 1 FROM jobq.job WHERE owner OPERATOR(pg_catalog.=) $1"
							   "     AND counted IS NOT NULL LIMIT $2) AS unfinished",
							   2, argtypes, values, true) != SPI_OK_SELECT)
			elog(ERROR, "could not count the jobs of role %u", role);
		counted_pending = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													  SPI_tuptable->tupdesc, 1,
													  &isnull));
		SPI_finish();
		PopActiveSnapshot();
		counted_role = role;
		counted_lxid = MyProc->lxid;
	}
	if (counted_pending >= lim->max_pending)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" has reached its limit of %d unfinished jobs",
						GetUserNameFromId(role, false), lim->max_pending),
				 errdetail("The administrator limits its jobs with jobq.configure_role()."),
				 errhint("Wait for some of its jobs to finish, or cancel some.")));
	return true;
}

/*
 * Does the current transaction hold the enqueue lock of a limited role?
 * (A worker commits after a job that took one: others wait for it.)
 */
bool
JobqRoleLockHeld(void)
{
	return OidIsValid(counted_role) && counted_lxid == MyProc->lxid;
}

/* a job of role was added by the current transaction */
void
JobqRoleEnqueued(Oid role)
{
	if (counted_role == role && counted_lxid == MyProc->lxid)
		counted_pending++;
}

/*
 * jobq.configure_role(role regrole, max_pending integer, max_running
 * integer) returns jobq.role_limits: sets both limits (NULL: none); the
 * workers and enqueues apply them from the commit on.
 */
Datum
jobq_configure_role(PG_FUNCTION_ARGS)
{
	Oid			argtypes[3] = {OIDOID, INT4OID, INT4OID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	Datum		row;
	bool		isnull;
	Oid			relid;
	int			n;

	JobqCheckPreloaded();
	PreventCommandIfReadOnly("jobq.configure_role()");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("role must not be null")));
	if (!PG_ARGISNULL(1) && PG_GETARG_INT32(1) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_pending must not be negative, not %d", PG_GETARG_INT32(1)),
				 errhint("Pass NULL for no limit.")));
	if (!PG_ARGISNULL(2) &&
		(PG_GETARG_INT32(2) < 0 || PG_GETARG_INT32(2) > JOBQ_MAX_WORKERS))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_running must be between 0 and %d, not %d",
						JOBQ_MAX_WORKERS, PG_GETARG_INT32(2)),
				 errhint("Pass NULL for no limit.")));
	if (GetUserNameFromId(PG_GETARG_OID(0), true) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", PG_GETARG_OID(0))));

	(void) JobqRoleLimits(&n);
	relid = limits_copy.relid;
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"jobq.role_limits\" does not exist"),
				 errhint("Update the extension with ALTER EXTENSION jobq UPDATE.")));

	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	if (JobqExecuteAsOwnerNulls("INSERT INTO jobq.role_limits AS l (role, max_pending, max_running)"
								" VALUES ($1::pg_catalog.regrole, $2, $3)"
								" ON CONFLICT (role) DO UPDATE"
								"   SET max_pending = excluded.max_pending,"
								"       max_running = excluded.max_running,"
								"       updated_at = pg_catalog.now()"
								" RETURNING l",
								3, argtypes, values, nulls, false) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not configure the limits of role %u", PG_GETARG_OID(0));
	row = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull),
							false, -1);
	SPI_finish();

	/* every backend reads the limits again; a raised limit needs a worker */
	CacheInvalidateRelcacheByRelid(relid);
	JobqWakeAllAtCommit();
	PG_RETURN_DATUM(row);
}
