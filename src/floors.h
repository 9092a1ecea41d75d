/*-------------------------------------------------------------------------
 *
 * floors.h
 *		The claim floors, one set per claim index (floors.c).
 *
 * IDENTIFICATION
 *		src/floors.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_FLOORS_H
#define JOBQ_FLOORS_H

#include "jobq.h"

/*
 * Claim floors (claim.c): per priority level, a key (run_at, id) below
 * which no job of that level is claimable, so that claims start there
 * instead of walking the dead entries at the head of the claim index.
 */
#define JOBQ_FLOOR_LEVELS		16
/* the floors' safety-net rediscovery comes every this many poll intervals */
#define JOBQ_FLOOR_RESCAN_POLLS	12

typedef struct JobqFloor
{
	int16		priority;
	TimestampTz run_at;
	int64		id;
} JobqFloor;

/* Keys compare by (run_at, id) within one priority level. */
static inline bool
JobqFloorKeyLess(TimestampTz run_at, int64 id, const JobqFloor *f)
{
	return run_at < f->run_at || (run_at == f->run_at && id < f->id);
}

/* floors.c: the claim floors, one set per claim index */
typedef enum JobqFloorSetId
{
	JOBQ_FLOORS_WORKERS,		/* job_claim_idx, claimed by worker slot */
	JOBQ_FLOORS_EXECUTORS,		/* job_external_idx, by jobq.claim() */
	JOBQ_NUM_FLOOR_SETS
} JobqFloorSetId;

/* executors' claims that may use the floors at once */
#define JOBQ_FLOOR_EXECUTOR_CLAIMERS	64

extern Size JobqFloorsShmemSize(void);
extern void JobqFloorsShmemInit(void);
extern void JobqFloorsNoteKeys(JobqFloorSetId set, const JobqFloor *keys, int n,
							   bool overflow);
extern bool JobqFloorsGet(JobqFloorSetId set, int16 *levels, JobqFloor *keys,
						  int *n);
extern int	JobqFloorClaimerTake(void);
extern void JobqFloorClaimerGive(int slot);
extern bool JobqFloorClaimBegin(JobqFloorSetId set, int slot, int16 priority,
								JobqFloor *floor);
extern void JobqFloorClaimEnd(JobqFloorSetId set, int slot, int16 priority,
							  bool raise, TimestampTz run_at, int64 id);
extern void JobqFloorLower(JobqFloorSetId set, int16 priority,
						   TimestampTz run_at, int64 id);
extern void JobqFloorsReset(JobqFloorSetId set);
extern bool JobqFloorsRediscoveryDue(JobqFloorSetId set);
extern void JobqFloorsInstall(JobqFloorSetId set, const int16 *levels, int n);
extern void JobqFloorsDiscover(JobqFloorSetId set);

#endif							/* JOBQ_FLOORS_H */
