"""People in the loop: the review queue's pages, the labelling studio, accounts and projects.

``tether studio serve`` runs it on the gateway's store; ``tether serve --studio`` mounts it at
``/studio`` beside the API, so escalated requests held by the gateway are decided on its pages.
"""
