/*-------------------------------------------------------------------------
 *
 * prune.h
 *		Retention: the turn to delete old finished jobs (prune.c).
 *
 * IDENTIFICATION
 *		src/prune.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_PRUNE_H
#define JOBQ_PRUNE_H

#include "jobq.h"

/* prune.c: retention */
extern Size JobqPruneShmemSize(void);
extern void JobqPruneShmemInit(void);
extern bool JobqPruneTurn(void);
extern void JobqPruneAgainSoon(void);
extern int	JobqPruneHistory(void);

#endif							/* JOBQ_PRUNE_H */
