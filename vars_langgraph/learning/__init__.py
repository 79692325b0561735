"""Learning: the policy math (scores, softmax, REINFORCE), the reward rules and the reranker
calibration the rerank, reward and update nodes use."""
