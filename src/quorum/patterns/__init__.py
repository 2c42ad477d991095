"""The chapter's two patterns, sectioning and voting, and their aggregation strategies."""

from quorum.patterns.adaptive import Adaptive, change_probability, leader_posterior
from quorum.patterns.aggregation import (
    Tally,
    cluster_vote,
    consensus_vote,
    majority_vote,
    merge_and_synthesize,
    normalize_text,
    tally,
    weighted_vote,
)
from quorum.patterns.fanout import CacheReport
from quorum.patterns.normalize import normalize_decision
from quorum.patterns.sectioning import Section, SectioningResult, SectioningWorkflow, SectionResult
from quorum.patterns.voting import Vote, Voter, VotingResult, VotingWorkflow

__all__ = [
    "Adaptive",
    "CacheReport",
    "Section",
    "SectionResult",
    "SectioningResult",
    "SectioningWorkflow",
    "Tally",
    "Vote",
    "Voter",
    "VotingResult",
    "VotingWorkflow",
    "change_probability",
    "cluster_vote",
    "consensus_vote",
    "leader_posterior",
    "majority_vote",
    "merge_and_synthesize",
    "normalize_decision",
    "normalize_text",
    "tally",
    "weighted_vote",
]
