/*-------------------------------------------------------------------------
 *
 * floors.c
 *		The claim floors: where, per priority level, claims start.
 *
 * claim.c explains why claims start at a floor instead of at the head of
 * the claim index.  This file keeps the floors, in a piece of shared
 * memory of its own, with what keeps them safe: the list of priority
 * levels, and for each claimer the claim it has in progress and the
 * smallest key that appeared in that claim's level meanwhile (its taint).
 * A spinlock guards it all; every critical section is a few loads and
 * stores over arrays of fixed size, and none can raise an error.  The one
 * function here that runs a statement is the discovery of the levels
 * (JobqFloorsDiscover), for either set.
 *
 * There are two sets of floors, one per claim index: the workers' (a
 * claimer per worker slot) and the external executors' (lease.c; a
 * claimer is any backend in jobq.claim(), which takes one of a fixed
 * number of claimer entries for the length of its claim, or claims from
 * the start when none is free).  The rules are the same for both.
 *
 * Who moves a floor:
 *	- a claim raises its level's floor (JobqFloorClaimEnd), never past its
 *	  taint;
 *	- the end of a transaction that enqueued lowers the floors to the keys
 *	  it enqueued and taints the claims in progress (JobqFloorsNoteKeys,
 *	  from wakeup.c);
 *	- a worker lowers a floor to a job it claimed and let go unrun, or
 *	  retried (JobqFloorLower);
 *	- an aborted execution transaction, a settlement that changed jobs and
 *	  a dead worker make the workers' floors invalid, and an aborted claim
 *	  of an executor the executors' (JobqFloorsReset), until a claimer
 *	  discovers the levels again (JobqFloorsInstall).
 *
 * IDENTIFICATION
 *		src/floors.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "floors.h"

/* a claim in progress */
typedef struct JobqFloorClaim
{
	bool		taken;			/* an executor's entry: in use */
	bool		claiming;
	int16		level;
	JobqFloor	taint;			/* smallest key that appeared meanwhile */
} JobqFloorClaim;

/* the claimers of a set: the workers' slots, or the executors' entries */
#define JOBQ_FLOOR_CLAIMERS Max(JOBQ_MAX_WORKERS, JOBQ_FLOOR_EXECUTOR_CLAIMERS)

typedef struct JobqFloorSet
{
	bool		valid;			/* levels known and floors usable */
	bool		overflowed;		/* more levels than JOBQ_FLOOR_LEVELS */
	TimestampTz rediscover_at;	/* next safety-net rediscovery */
	int			nfloors;
	JobqFloor	floors[JOBQ_FLOOR_LEVELS];	/* highest priority first */
	int			nclaims;
	JobqFloorClaim claims[JOBQ_FLOOR_CLAIMERS];
} JobqFloorSet;

typedef struct JobqFloorsState
{
	slock_t		mutex;
	JobqFloorSet sets[JOBQ_NUM_FLOOR_SETS];
} JobqFloorsState;

static JobqFloorsState *Floors = NULL;

Size
JobqFloorsShmemSize(void)
{
	return MAXALIGN(sizeof(JobqFloorsState));
}

/* at the server's start, and again after a crash; under AddinShmemInitLock */
void
JobqFloorsShmemInit(void)
{
	bool		found;

	Floors = ShmemInitStruct("jobq floors", JobqFloorsShmemSize(), &found);
	if (!found)
	{
		memset(Floors, 0, JobqFloorsShmemSize());
		SpinLockInit(&Floors->mutex);
		/* levels unknown until a claimer discovers them */
		Floors->sets[JOBQ_FLOORS_WORKERS].valid = false;
		Floors->sets[JOBQ_FLOORS_WORKERS].nclaims = JOBQ_MAX_WORKERS;
		Floors->sets[JOBQ_FLOORS_EXECUTORS].valid = false;
		Floors->sets[JOBQ_FLOORS_EXECUTORS].nclaims = JOBQ_FLOOR_EXECUTOR_CLAIMERS;
	}
}

static int
find_level(JobqFloorSet *fs, int16 priority)
{
	int			i;

	for (i = 0; i < fs->nfloors; i++)
		if (fs->floors[i].priority == priority)
			return i;
	return -1;
}

/*
 * A key appeared below which a claim in progress (of that level, or of
 * any level with all) must not raise its floor; caller holds the mutex.
 */
static void
taint_claims_locked(JobqFloorSet *fs, int16 priority, bool all,
					TimestampTz run_at, int64 id)
{
	int			i;

	for (i = 0; i < fs->nclaims; i++)
	{
		JobqFloorClaim *c = &fs->claims[i];

		if (c->claiming && (all || c->level == priority) &&
			JobqFloorKeyLess(run_at, id, &c->taint))
		{
			c->taint.run_at = run_at;
			c->taint.id = id;
		}
	}
}

/* caller holds the mutex */
static void
invalidate_locked(JobqFloorSet *fs)
{
	fs->valid = false;
	taint_claims_locked(fs, 0, true, DT_NOBEGIN, 0);
}

/*
 * Lower (or add) the floor of a level; caller holds the mutex.  The list
 * of levels is kept even while the floors are not valid, so that a
 * rediscovery misses no level enqueued after its snapshot.
 */
static void
lower_floor_locked(JobqFloorSet *fs, int16 priority, TimestampTz run_at, int64 id)
{
	int			k = find_level(fs, priority);

	taint_claims_locked(fs, priority, false, run_at, id);
	if (k >= 0)
	{
		if (JobqFloorKeyLess(run_at, id, &fs->floors[k]))
		{
			fs->floors[k].run_at = run_at;
			fs->floors[k].id = id;
		}
		return;
	}
	if (fs->overflowed)
		return;
	if (fs->nfloors >= JOBQ_FLOOR_LEVELS)
	{
		/* too many levels: claims scan from the start again */
		fs->overflowed = true;
		fs->valid = false;
		return;
	}
	/* a new level, kept in descending priority order */
	for (k = fs->nfloors; k > 0 && fs->floors[k - 1].priority < priority; k--)
		fs->floors[k] = fs->floors[k - 1];
	fs->floors[k].priority = priority;
	fs->floors[k].run_at = run_at;
	fs->floors[k].id = id;
	fs->nfloors++;
}

/*
 * A transaction that enqueued ended (commit or abort, and also at
 * PREPARE): keys[] holds the smallest key it enqueued per level, and
 * overflow says it enqueued into more levels than keys[] holds.  Every
 * such key must be at or above its level's floor, and taints the claims
 * in progress, so that no worker raises a floor past jobs its snapshot may
 * not have seen.  Lowering for an abort is merely conservative.
 */
void
JobqFloorsNoteKeys(JobqFloorSetId set, const JobqFloor *keys, int n, bool overflow)
{
	JobqFloorSet *fs;
	int			i;

	if (Floors == NULL)
		return;
	fs = &Floors->sets[set];
	SpinLockAcquire(&Floors->mutex);
	for (i = 0; i < n; i++)
		lower_floor_locked(fs, keys[i].priority, keys[i].run_at, keys[i].id);
	if (overflow)
	{
		fs->overflowed = true;
		invalidate_locked(fs);
	}
	SpinLockRelease(&Floors->mutex);
}

/*
 * Copy the priority levels, highest first, and if keys is not NULL their
 * floors; false if the floors are not valid (claim from the start).
 */
bool
JobqFloorsGet(JobqFloorSetId set, int16 *levels, JobqFloor *keys, int *n)
{
	JobqFloorSet *fs = &Floors->sets[set];
	bool		valid;
	int			i;

	SpinLockAcquire(&Floors->mutex);
	valid = fs->valid;
	*n = fs->nfloors;
	for (i = 0; i < fs->nfloors; i++)
	{
		levels[i] = fs->floors[i].priority;
		if (keys != NULL)
			keys[i] = fs->floors[i];
	}
	SpinLockRelease(&Floors->mutex);
	return valid;
}

/*
 * An executor's claim begins: a claimer entry of the executors' set for
 * it, or -1 if none is free (then it claims from the start).
 */
int
JobqFloorClaimerTake(void)
{
	JobqFloorSet *fs = &Floors->sets[JOBQ_FLOORS_EXECUTORS];
	int			i;
	int			slot = -1;

	SpinLockAcquire(&Floors->mutex);
	for (i = 0; i < fs->nclaims; i++)
		if (!fs->claims[i].taken)
		{
			fs->claims[i].taken = true;
			fs->claims[i].claiming = false;
			slot = i;
			break;
		}
	SpinLockRelease(&Floors->mutex);
	return slot;
}

/* the executor's claim is over (or failed): its entry is free again */
void
JobqFloorClaimerGive(int slot)
{
	JobqFloorSet *fs = &Floors->sets[JOBQ_FLOORS_EXECUTORS];

	SpinLockAcquire(&Floors->mutex);
	fs->claims[slot].taken = false;
	fs->claims[slot].claiming = false;
	SpinLockRelease(&Floors->mutex);
}

/*
 * A claim of one level begins: *floor is where it starts.  From now until
 * JobqFloorClaimEnd, every key that appears in that level (an enqueue's
 * commit, a job let go) taints the claim: it will not raise the floor
 * past that key, which its snapshot may not have seen.  False if the
 * level has no floor (claim from the start).  A claim that an error cuts
 * short stays marked in progress until the worker's next claim begins:
 * it only collects taints meanwhile.
 */
bool
JobqFloorClaimBegin(JobqFloorSetId set, int slot, int16 priority, JobqFloor *floor)
{
	JobqFloorSet *fs = &Floors->sets[set];
	JobqFloorClaim *c = &fs->claims[slot];
	int			k;
	bool		ok = false;

	SpinLockAcquire(&Floors->mutex);
	k = find_level(fs, priority);
	if (fs->valid && k >= 0)
	{
		*floor = fs->floors[k];
		c->claiming = true;
		c->level = priority;
		c->taint.priority = priority;
		c->taint.run_at = DT_NOEND;
		c->taint.id = PG_INT64_MAX;
		ok = true;
	}
	SpinLockRelease(&Floors->mutex);
	return ok;
}

/*
 * The claim is over; with raise, it locked jobs up to key (run_at, id):
 * raise the level's floor there, or to the claim's taint if lower.
 */
void
JobqFloorClaimEnd(JobqFloorSetId set, int slot, int16 priority, bool raise,
				  TimestampTz run_at, int64 id)
{
	JobqFloorSet *fs = &Floors->sets[set];
	JobqFloorClaim *c = &fs->claims[slot];
	JobqFloor	target = {priority, run_at, id};
	int			k;

	SpinLockAcquire(&Floors->mutex);
	k = find_level(fs, priority);
	if (raise && fs->valid && k >= 0)
	{
		if (JobqFloorKeyLess(c->taint.run_at, c->taint.id, &target))
			target = c->taint;
		if (JobqFloorKeyLess(fs->floors[k].run_at, fs->floors[k].id, &target))
		{
			fs->floors[k].run_at = target.run_at;
			fs->floors[k].id = target.id;
		}
	}
	c->claiming = false;
	SpinLockRelease(&Floors->mutex);
}

/*
 * A claimed job goes back unrun (its lock is gone with the commit that
 * called us): it must be at or above its level's floor.
 */
void
JobqFloorLower(JobqFloorSetId set, int16 priority, TimestampTz run_at, int64 id)
{
	SpinLockAcquire(&Floors->mutex);
	lower_floor_locked(&Floors->sets[set], priority, run_at, id);
	SpinLockRelease(&Floors->mutex);
}

/*
 * Forget the floors (an execution transaction aborted, a worker died, a
 * settlement changed jobs): claims scan from the start until a worker
 * discovers the levels again.
 */
void
JobqFloorsReset(JobqFloorSetId set)
{
	if (Floors == NULL)
		return;
	SpinLockAcquire(&Floors->mutex);
	invalidate_locked(&Floors->sets[set]);
	SpinLockRelease(&Floors->mutex);
}

/*
 * Is a discovery of the levels due?  It is while the floors are not
 * valid, and every JOBQ_FLOOR_RESCAN_POLLS times jobq.poll_interval as a
 * safety net (a job enqueued by a prepared transaction, or unlocked by a
 * session other than a worker, may lie below its floor until then).  Not
 * more often: the claims after it walk the dead head of the index once,
 * which costs seconds under a long-held xmin.  If due, the caller takes
 * it; after an overflow the list of levels starts empty, before the
 * caller's snapshot.
 */
bool
JobqFloorsRediscoveryDue(JobqFloorSetId set)
{
	JobqFloorSet *fs = &Floors->sets[set];
	TimestampTz now = GetCurrentTimestamp();
	bool		due;

	SpinLockAcquire(&Floors->mutex);
	due = !fs->valid || fs->rediscover_at <= now;
	if (due)
	{
		fs->rediscover_at =
			TimestampTzPlusMilliseconds(now, (int64) jobq_poll_interval *
										JOBQ_FLOOR_RESCAN_POLLS);
		if (fs->overflowed)
		{
			fs->nfloors = 0;
			fs->overflowed = false;
		}
	}
	SpinLockRelease(&Floors->mutex);
	return due;
}

/*
 * Install discovered levels: every floor goes back to the start (always
 * safe), discovered levels join the list, and the floors are valid again
 * unless there are too many levels.
 */
void
JobqFloorsInstall(JobqFloorSetId set, const int16 *levels, int n)
{
	JobqFloorSet *fs = &Floors->sets[set];
	int			i;

	SpinLockAcquire(&Floors->mutex);
	for (i = 0; i < n; i++)
		lower_floor_locked(fs, levels[i], DT_NOBEGIN, 0);
	for (i = 0; i < fs->nfloors; i++)
	{
		fs->floors[i].run_at = DT_NOBEGIN;
		fs->floors[i].id = 0;
	}
	fs->valid = !fs->overflowed;
	/* a claim in progress started above the floors now at the start */
	taint_claims_locked(fs, 0, true, DT_NOBEGIN, 0);
	SpinLockRelease(&Floors->mutex);
}

/*
 * The priority levels of claimable jobs of a set's claim index, highest
 * first, at most $1 of them, by a skip scan: the condition is the index's
 * predicate, which depends on the installed version for the workers'.
 */
static char *
levels_sql(JobqFloorSetId set)
{
	const JobqSchema *schema = JobqSchemaGet();
	const char *pred;

	if (set == JOBQ_FLOORS_EXECUTORS)
		pred = "external AND lease_token IS NULL";
	else
		pred = schema->job_state ? "state = 'pending'" :
			schema->executors ? "NOT external" : "true";
	return psprintf("WITH RECURSIVE l(p) AS ("
					"  (SELECT priority FROM jobq.job WHERE %s"
					"    ORDER BY priority DESC LIMIT 1)"
					"  UNION ALL"
					"  SELECT (SELECT priority FROM jobq.job WHERE %s"
					"            AND priority OPERATOR(pg_catalog.<) l.p"
					"           ORDER BY priority DESC LIMIT 1)"
					"    FROM l WHERE l.p IS NOT NULL"
					")"
					"SELECT p FROM l WHERE p IS NOT NULL LIMIT $1", pred, pred);
}

/*
 * Discover the priority levels of a set and install them, if that is due
 * (see JobqFloorsRediscoveryDue).  The statement runs read-write, so that
 * it takes a snapshot of its own, after the rediscovery began (a level
 * enqueued later is added by its enqueue), and as the owner of jobq's
 * tables, so that it sees every role's jobs.  Needs SPI.
 */
void
JobqFloorsDiscover(JobqFloorSetId set)
{
	static JobqPlanSet plans;
	static SPIPlanPtr levels_plans[JOBQ_NUM_FLOOR_SETS];
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1];
	int16		levels[JOBQ_FLOOR_LEVELS + 1];
	SPIPlanPtr	plan;
	uint64		i;

	if (!JobqFloorsRediscoveryDue(set))
		return;
	plan = levels_plans[set] != NULL && plans.generation == JobqSchemaGet()->generation ?
		levels_plans[set] :
		JobqKeepPlanIn(&plans, &levels_plans[set], levels_sql(set), 1, argtypes);
	values[0] = Int32GetDatum(JOBQ_FLOOR_LEVELS + 1);
	if (JobqExecuteKeptAsOwner(plan, values) != SPI_OK_SELECT)
		elog(ERROR, "jobq could not list priority levels");
	for (i = 0; i < SPI_processed && i < lengthof(levels); i++)
	{
		bool		isnull;

		levels[i] = DatumGetInt16(SPI_getbinval(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 1, &isnull));
	}
	JobqFloorsInstall(set, levels, (int) i);
}
