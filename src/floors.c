/*-------------------------------------------------------------------------
 *
 * floors.c
 *		The claim floors: where, per priority level, claims start.
 *
 * claim.c explains why claims start at a floor instead of at the head of
 * the claim index.  This file keeps the floors, in a piece of shared
 * memory of its own, with what keeps them safe: the list of priority
 * levels, and for each worker the claim it has in progress and the
 * smallest key that appeared in that claim's level meanwhile (its taint).
 * A spinlock guards it all; every critical section is a few loads and
 * stores over arrays of fixed size, and none can raise an error.
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
 *	  a dead worker make them all invalid (JobqFloorsReset), until a worker
 *	  discovers the levels again (JobqFloorsInstall).
 *
 * IDENTIFICATION
 *		src/floors.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "jobq.h"

/* a worker's claim in progress */
typedef struct JobqFloorClaim
{
	bool		claiming;
	int16		level;
	JobqFloor	taint;			/* smallest key that appeared meanwhile */
} JobqFloorClaim;

typedef struct JobqFloorsState
{
	slock_t		mutex;
	bool		valid;			/* levels known and floors usable */
	bool		overflowed;		/* more levels than JOBQ_FLOOR_LEVELS */
	TimestampTz rediscover_at;	/* next safety-net rediscovery */
	int			nfloors;
	JobqFloor	floors[JOBQ_FLOOR_LEVELS];	/* highest priority first */
	JobqFloorClaim claims[JOBQ_MAX_WORKERS];
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
		/* levels unknown until a worker discovers them */
		Floors->valid = false;
	}
}

static int
find_level(int16 priority)
{
	int			i;

	for (i = 0; i < Floors->nfloors; i++)
		if (Floors->floors[i].priority == priority)
			return i;
	return -1;
}

/*
 * A key appeared below which a claim in progress (of that level, or of
 * any level with all) must not raise its floor; caller holds the mutex.
 */
static void
taint_claims_locked(int16 priority, bool all, TimestampTz run_at, int64 id)
{
	int			i;

	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		JobqFloorClaim *c = &Floors->claims[i];

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
invalidate_locked(void)
{
	Floors->valid = false;
	taint_claims_locked(0, true, DT_NOBEGIN, 0);
}

/*
 * Lower (or add) the floor of a level; caller holds the mutex.  The list
 * of levels is kept even while the floors are not valid, so that a
 * rediscovery misses no level enqueued after its snapshot.
 */
static void
lower_floor_locked(int16 priority, TimestampTz run_at, int64 id)
{
	int			k = find_level(priority);

	taint_claims_locked(priority, false, run_at, id);
	if (k >= 0)
	{
		if (JobqFloorKeyLess(run_at, id, &Floors->floors[k]))
		{
			Floors->floors[k].run_at = run_at;
			Floors->floors[k].id = id;
		}
		return;
	}
	if (Floors->overflowed)
		return;
	if (Floors->nfloors >= JOBQ_FLOOR_LEVELS)
	{
		/* too many levels: claims scan from the start again */
		Floors->overflowed = true;
		Floors->valid = false;
		return;
	}
	/* a new level, kept in descending priority order */
	for (k = Floors->nfloors; k > 0 &&
		 Floors->floors[k - 1].priority < priority; k--)
		Floors->floors[k] = Floors->floors[k - 1];
	Floors->floors[k].priority = priority;
	Floors->floors[k].run_at = run_at;
	Floors->floors[k].id = id;
	Floors->nfloors++;
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
JobqFloorsNoteKeys(const JobqFloor *keys, int n, bool overflow)
{
	int			i;

	if (Floors == NULL)
		return;
	SpinLockAcquire(&Floors->mutex);
	for (i = 0; i < n; i++)
		lower_floor_locked(keys[i].priority, keys[i].run_at, keys[i].id);
	if (overflow)
	{
		Floors->overflowed = true;
		invalidate_locked();
	}
	SpinLockRelease(&Floors->mutex);
}

/*
 * Copy the priority levels, highest first; false if the floors are not
 * valid (claim from the start).
 */
bool
JobqFloorsGet(int16 *levels, int *n)
{
	bool		valid;
	int			i;

	SpinLockAcquire(&Floors->mutex);
	valid = Floors->valid;
	*n = Floors->nfloors;
	for (i = 0; i < Floors->nfloors; i++)
		levels[i] = Floors->floors[i].priority;
	SpinLockRelease(&Floors->mutex);
	return valid;
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
JobqFloorClaimBegin(int slot, int16 priority, JobqFloor *floor)
{
	JobqFloorClaim *c = &Floors->claims[slot];
	int			k;
	bool		ok = false;

	SpinLockAcquire(&Floors->mutex);
	k = find_level(priority);
	if (Floors->valid && k >= 0)
	{
		*floor = Floors->floors[k];
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
JobqFloorClaimEnd(int slot, int16 priority, bool raise,
				  TimestampTz run_at, int64 id)
{
	JobqFloorClaim *c = &Floors->claims[slot];
	JobqFloor	target = {priority, run_at, id};
	int			k;

	SpinLockAcquire(&Floors->mutex);
	k = find_level(priority);
	if (raise && Floors->valid && k >= 0)
	{
		if (JobqFloorKeyLess(c->taint.run_at, c->taint.id, &target))
			target = c->taint;
		if (JobqFloorKeyLess(Floors->floors[k].run_at, Floors->floors[k].id,
							 &target))
		{
			Floors->floors[k].run_at = target.run_at;
			Floors->floors[k].id = target.id;
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
JobqFloorLower(int16 priority, TimestampTz run_at, int64 id)
{
	SpinLockAcquire(&Floors->mutex);
	lower_floor_locked(priority, run_at, id);
	SpinLockRelease(&Floors->mutex);
}

/*
 * Forget the floors (an execution transaction aborted, a worker died, a
 * settlement changed jobs): claims scan from the start until a worker
 * discovers the levels again.
 */
void
JobqFloorsReset(void)
{
	if (Floors == NULL)
		return;
	SpinLockAcquire(&Floors->mutex);
	invalidate_locked();
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
JobqFloorsRediscoveryDue(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		due;

	SpinLockAcquire(&Floors->mutex);
	due = !Floors->valid || Floors->rediscover_at <= now;
	if (due)
	{
		Floors->rediscover_at =
			TimestampTzPlusMilliseconds(now, (int64) jobq_poll_interval *
										JOBQ_FLOOR_RESCAN_POLLS);
		if (Floors->overflowed)
		{
			Floors->nfloors = 0;
			Floors->overflowed = false;
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
JobqFloorsInstall(const int16 *levels, int n)
{
	int			i;

	SpinLockAcquire(&Floors->mutex);
	for (i = 0; i < n; i++)
		lower_floor_locked(levels[i], DT_NOBEGIN, 0);
	for (i = 0; i < Floors->nfloors; i++)
	{
		Floors->floors[i].run_at = DT_NOBEGIN;
		Floors->floors[i].id = 0;
	}
	Floors->valid = !Floors->overflowed;
	/* a claim in progress started above the floors now at the start */
	taint_claims_locked(0, true, DT_NOBEGIN, 0);
	SpinLockRelease(&Floors->mutex);
}
