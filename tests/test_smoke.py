from conftest import T


def test_submit_and_wait(client):
    job_id = client.submit(T + "add", args=[2, 3])
    job = client.wait(job_id, timeout=10)
    assert job.status == "completed"
    assert job.result == 5
    assert job.attempts == 1
